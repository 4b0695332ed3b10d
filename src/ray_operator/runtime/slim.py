"""What the caches keep of a pod: the fields the controllers read, not the spec's bulk.

The shared pod cache holds the operator's pods, every Ray pod among them; a pod's spec
(containers, env, volumes) and its managedFields are most of its size, and no controller reads
them from the cache. The RayJob controller reads a runner pod's phase, container waits and
scheduling condition; the Ray controller an autoscaled pod's conditions, annotations and
address. Keeping only those makes memory grow slowly with the pods' count (client-go's informers
offer the same through SetTransform).
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
_SPEC_KEPT = ("nodeName", "readinessGates", "schedulingGates")
_STATUS_KEPT = ("phase", "podIP", "reason", "message", "startTime")
_CONDITION_KEPT = ("type", "status", "reason", "message")


def _container_status(item: Obj) -> Obj:
    state = item.get("state") or {}
    return {
        "name": item.get("name"),
        "restartCount": item.get("restartCount", 0),
        "state": {k: v for k, v in state.items() if k in ("waiting", "terminated", "running")},
    }


def slim_pod(pod: Obj) -> Obj:
    """The pod as the caches keep it."""
    meta = {k: v for k, v in (pod.get("metadata") or {}).items() if k != "managedFields"}
    spec = pod.get("spec") or {}
    slim: Obj = {
        "apiVersion": pod.get("apiVersion", "v1"),
        "kind": pod.get("kind", "Pod"),
        "metadata": meta,
        "spec": {k: spec[k] for k in _SPEC_KEPT if k in spec},
    }
    status = pod.get("status")
    if status is not None:
        kept: Obj = {k: status[k] for k in _STATUS_KEPT if k in status}
        kept["conditions"] = [{k: c[k] for k in _CONDITION_KEPT if k in c}
                              for c in status.get("conditions") or []]
        for key in ("containerStatuses", "initContainerStatuses"):
            if key in status:
                kept[key] = [_container_status(item) for item in status[key] or []]
        slim["status"] = kept
    return slim
