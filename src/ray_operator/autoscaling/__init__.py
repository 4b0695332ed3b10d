"""Ray's autoscaler as ray-operator runs it: the node provider shipped to the autoscaler pod.

:mod:`ray_operator.autoscaling.node_provider` runs in the cluster's own Ray image, not in the
operator: the operator only reads its text, to put it in the ConfigMap the autoscaler mounts.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def provider_code() -> str:
    """The source of the node provider module, as the autoscaler pod runs it."""
    return files(__package__).joinpath("node_provider.py").read_text(encoding="utf-8")
