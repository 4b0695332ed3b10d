"""The ``dataFiles`` a module needs from this repository, as its sample manifest lists them.

SeedFarmer takes only files as ``dataFiles`` (it checks each with ``os.path.isfile``:
seed-farmer's seedfarmer/mgmt/deploy_utils.py, ``validate_data_files``) and copies each one to
``module/<its path>`` in the bundle (seedfarmer/deployment/deploy_remote.py), so a directory has
to be listed file by file. Print a module's list with::

    python deploy/aws/common/bundle.py ray-orchestrator
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``common`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.image import image_inputs  # noqa: E402

#: What each module's app.py reads besides the image's inputs (directories and files).
MODULE_DATA: dict[str, tuple[str, ...]] = {
    "ray-operator": ("deploy/aws/common", "charts/ray-operator"),
    "ray-orchestrator": (
        "deploy/aws/common",
        # The default pipeline_file and the scripts it names; src/ (the ASL export) is already
        # among the image's inputs.
        "examples/pipelines/train-inference/pipeline.yaml",
        "examples/pipelines/train-inference/train.py",
        "examples/pipelines/train-inference/inference.py",
    ),
}


def _files(root: Path, path: str) -> list[Path]:
    target = root / path
    if target.is_file():
        return [target]
    return [
        p
        for p in target.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]


def data_files(root: Path, module: str) -> list[str]:
    """Every file the module needs from ``root``, relative to it, sorted."""
    files = {p for path in MODULE_DATA[module] for p in _files(root, path)}
    files |= set(image_inputs(root))
    return sorted(p.relative_to(root).as_posix() for p in files)


def main(argv: list[str]) -> int:
    """Print the ``dataFiles`` block of the module named in ``argv``."""
    if len(argv) != 1 or argv[0] not in MODULE_DATA:
        print(f"usage: bundle.py {{{','.join(MODULE_DATA)}}}", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[3]
    print("dataFiles:")
    for path in data_files(root, argv[0]):
        print(f"  - filePath: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
