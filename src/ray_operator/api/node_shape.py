"""What Ray counts on a node started from a pod template: CPUs, GPUs, memory, custom resources.

Ray's autoscaler plans with the shape of a node of each group before one exists, so the shape
must follow from the template alone: from ``ray start`` flags when the Ray container runs
``ray start`` itself, else from the container's limits the way Ray reads them (a cgroup's CPU
quota truncated to whole CPUs; ``--num-cpus=$(VAR)`` with ``VAR`` a ``limits.cpu`` field
reference as the kubelet rounds it, up).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final

from ray_operator.api.quantity import quantity

Obj = dict[str, Any]

# The Ray containers of the default templates; a user's template may name its own.
RAY_HEAD_CONTAINER: Final = "ray-head"
RAY_WORKER_CONTAINER: Final = "ray-worker"
GPU_RESOURCE: Final = "nvidia.com/gpu"


def ray_start_container(template: Obj, name: str = RAY_WORKER_CONTAINER) -> Obj | None:
    """The container that runs ``ray start`` as its command (``ray``, args ``start ...``)."""
    containers: list[Obj] = (template.get("spec") or {}).get("containers") or []
    named = [c for c in containers if c.get("name") == name] or containers[:1]
    for container in named:
        if container.get("command") == ["ray"] and (container.get("args") or [""])[0] == "start":
            return container
    return None


def start_flags(container: Obj) -> dict[str, str]:
    """``--flag=value`` arguments of a ``ray start`` container, by flag."""
    flags = {}
    for arg in container.get("args") or []:
        if isinstance(arg, str) and arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            flags[name] = value
    return flags


@dataclass(frozen=True)
class NodeShape:
    """A node's Ray resources, and whether its CPU count could be known from the template."""

    resources: dict[str, float] = field(default_factory=dict)
    cpu_known: bool = False


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _limit(container: Obj, resource: str) -> float | None:
    found = quantity(((container.get("resources") or {}).get("limits") or {}).get(resource))
    return float(found) if found is not None else None


def _cpus_from_reference(container: Obj, value: str, containers: list[Obj]) -> float | None:
    """``$(VAR)`` where VAR is a ``limits.cpu`` resource field reference: the kubelet's ceil."""
    if not (value.startswith("$(") and value.endswith(")")):
        return None
    name = value[2:-1]
    for env in container.get("env") or []:
        ref = ((env.get("valueFrom") or {}).get("resourceFieldRef")) if env.get("name") == name \
            else None
        if not ref or ref.get("resource") != "limits.cpu":
            continue
        owner = next((c for c in containers if c.get("name") == ref.get("containerName")),
                     container)
        limit = _limit(owner, "cpu")
        divisor = quantity(ref.get("divisor") or "1")
        if limit is None or not divisor:
            return None
        return float(math.ceil(limit / float(divisor)))
    return None


def node_shape(template: Obj, custom: dict[str, float] | None = None,
               name: str = RAY_WORKER_CONTAINER) -> NodeShape:
    """The Ray resources of a node of ``template``.

    ``custom``: the group's ``rayResources``, when they are not in its flags yet.
    """
    containers: list[Obj] = (template.get("spec") or {}).get("containers") or []
    container = ray_start_container(template, name)
    flags = start_flags(container) if container is not None else {}
    if container is None:
        container = next((c for c in containers if c.get("name") == name),
                         containers[0] if containers else {})
    resources: dict[str, float] = {}
    cpus: float | None = None
    if "--num-cpus" in flags:
        cpus = _number(flags["--num-cpus"])
        if cpus is None:
            cpus = _cpus_from_reference(container, flags["--num-cpus"], containers)
    else:
        limit = _limit(container, "cpu")
        cpus = float(math.floor(limit)) if limit is not None else None
    if cpus is not None:
        resources["CPU"] = cpus
    gpus = _number(flags["--num-gpus"]) if "--num-gpus" in flags else _limit(container,
                                                                              GPU_RESOURCE)
    if gpus:
        resources["GPU"] = float(int(gpus))
    # Without --memory Ray sizes its memory resource from what it finds free, not the limit.
    memory = _number(flags["--memory"]) if "--memory" in flags else None
    if memory:
        resources["memory"] = float(int(memory))
    if "--resources" in flags:
        try:
            given = json.loads(flags["--resources"])
        except ValueError:
            given = {}
        if isinstance(given, dict):
            resources.update({str(k): float(v) for k, v in given.items()
                              if isinstance(v, int | float) and not isinstance(v, bool)})
    resources.update({k: float(v) for k, v in (custom or {}).items()})
    return NodeShape(resources, cpu_known=cpus is not None)
