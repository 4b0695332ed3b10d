"""Ray on Kubernetes from Python."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ray-operator")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0"
