"""What the caches keep of a pod: its metadata and status, not its spec.

A pod's spec (containers, env, volumes) is most of its size, and no controller reads it from
the cache: the RayJob controller reads a runner pod's phase and waits, the Ray controller an
autoscaled pod's conditions and address. Keeping less makes memory follow the pods' count
slowly (client-go's informers offer the same through SetTransform).
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
# The spec fields read from a cached pod.
_SPEC_KEPT = ("nodeName", "readinessGates")


def slim_pod(pod: Obj) -> Obj:
    """The pod without its spec's bulk and without managedFields."""
    meta = {k: v for k, v in (pod.get("metadata") or {}).items() if k != "managedFields"}
    spec = pod.get("spec") or {}
    slim: Obj = {
        "apiVersion": pod.get("apiVersion", "v1"),
        "kind": pod.get("kind", "Pod"),
        "metadata": meta,
        "spec": {k: spec[k] for k in _SPEC_KEPT if k in spec},
    }
    if "status" in pod:
        slim["status"] = pod["status"]
    return slim
