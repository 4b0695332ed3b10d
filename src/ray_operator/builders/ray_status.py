"""Compute a ``Ray`` resource's status from what its children show: a pure function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray_operator.api.constants import (
    COND_AUTOSCALER_AVAILABLE,
    COND_HEAD_AVAILABLE,
    COND_HEAD_PROGRESSING,
    COND_HEAD_REPLICA_FAILURE,
    COND_HEALTH,
    COND_REQUESTS_FEASIBLE,
    COND_WORKER_AVAILABLE,
    COND_WORKER_PROGRESSING,
    COND_WORKER_REPLICA_FAILURE,
    REASON_INFEASIBLE,
    REASON_SUSPENDED,
)

Obj = dict[str, Any]

# Deployment condition type -> our condition type, per role.
_HEAD = {
    "Available": COND_HEAD_AVAILABLE,
    "Progressing": COND_HEAD_PROGRESSING,
    "ReplicaFailure": COND_HEAD_REPLICA_FAILURE,
}
_WORKER = {
    "Available": COND_WORKER_AVAILABLE,
    "Progressing": COND_WORKER_PROGRESSING,
    "ReplicaFailure": COND_WORKER_REPLICA_FAILURE,
}
CONDITION_ORDER = [COND_HEALTH, *_HEAD.values(), *_WORKER.values()]


@dataclass(frozen=True)
class Observed:
    """What the operator saw of one cluster at one moment."""

    generation: int | None
    head_desired: int
    worker_desired: int
    head: Obj | None
    worker: Obj | None
    worker_selector: str = ""
    error: str | None = None  # invalid spec or a failed write: Health=False with this message
    error_reason: str = "InvalidSpec"
    suspended: bool = False  # spec.suspend is true
    # spec.workerGroups: (name, desired pods, its Deployment as seen).
    groups: tuple[tuple[str, int, Obj | None], ...] = ()
    # spec.autoscaling: the fewest workers of each group ("" for spec.worker) Health waits for
    # (a scale-up in progress is no loss of health), the autoscaler's Deployment, what it
    # reads (status.autoscaling) and the requests it cannot serve, in words.
    floors: dict[str, int] | None = None
    autoscaler: Obj | None = None
    autoscaling: Obj | None = None
    infeasible: str | None = None


def group_condition(group: str) -> str:
    """The type of a worker group's availability condition."""
    return f"RayWorkerGroup-{group}-Available"


def _group_available(deployment: Obj | None) -> Obj | None:
    found = {c.get("type"): c for c in (deployment or {}).get("status", {}).get("conditions", [])}
    return found.get("Available")


def replica_counts(deployment: Obj | None) -> Obj:
    """``{replicas, readyReplicas, availableReplicas, updatedReplicas}`` of a Deployment."""
    status = (deployment or {}).get("status", {})
    return {
        key: int(status.get(key, 0) or 0)
        for key in ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas")
    }


def _settled(deployment: Obj | None, desired: int) -> bool:
    """Every desired pod is updated and available, and the controller saw the last change."""
    if deployment is None:
        return False
    counts = replica_counts(deployment)
    status = deployment.get("status", {})
    seen = int(status.get("observedGeneration", 0)) >= int(
        deployment["metadata"].get("generation", 0)
    )
    return (
        seen
        and counts["updatedReplicas"] >= desired
        and counts["availableReplicas"] >= desired
        and counts["replicas"] == desired
    )


def _enough(deployment: Obj | None, desired: int, floor: int | None) -> bool:
    """Settled; for an autoscaled group, at least its fewest workers available."""
    if floor is None:
        return _settled(deployment, desired)
    return deployment is not None and replica_counts(deployment)["availableReplicas"] >= floor


def _failure(deployment: Obj | None) -> str | None:
    for cond in (deployment or {}).get("status", {}).get("conditions", []):
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"{cond.get('reason')}: {cond.get('message')}"
        if cond.get("type") == "Progressing" and cond.get("status") == "False":
            return f"{cond.get('reason')}: {cond.get('message')}"
    return None


def _merge(
    previous: dict[str, Obj],
    ctype: str,
    status: str,
    reason: str | None,
    message: str | None,
    now: str,
) -> Obj:
    """A condition, keeping its times when nothing about it changed."""
    old = previous.get(ctype)
    cond: Obj = {"type": ctype, "status": status}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    if old and old.get("status") == status:
        cond["lastTransitionTime"] = old.get("lastTransitionTime", now)
    else:
        cond["lastTransitionTime"] = now
    same = old and all(old.get(k) == cond.get(k) for k in ("status", "reason", "message"))
    cond["lastUpdateTime"] = old.get("lastUpdateTime", now) if same and old else now
    return cond


def compute_status(previous: Obj | None, observed: Observed, now: str) -> Obj:
    """The status to show; equal to ``previous`` (bar lastReconcileTime) when nothing changed."""
    previous = previous or {}
    prev_conds = {c["type"]: c for c in previous.get("conditions", []) if "type" in c}
    conditions: list[Obj] = []
    for mapping, deployment in ((_HEAD, observed.head), (_WORKER, observed.worker)):
        found = {c["type"]: c for c in (deployment or {}).get("status", {}).get("conditions", [])}
        for dtype, ctype in mapping.items():
            src = found.get(dtype)
            conditions.append(
                _merge(
                    prev_conds,
                    ctype,
                    src.get("status", "Unknown") if src else "Unknown",
                    src.get("reason") if src else None,
                    src.get("message") if src else None,
                    now,
                )
            )
    for group, _, deployment in observed.groups:
        src = _group_available(deployment)
        conditions.append(
            _merge(
                prev_conds,
                group_condition(group),
                src.get("status", "Unknown") if src else "Unknown",
                src.get("reason") if src else None,
                src.get("message") if src else None,
                now,
            )
        )
    floors = observed.floors
    if floors is not None:
        conditions.extend(_autoscaling_conditions(prev_conds, observed, now))
    head_ok = _settled(observed.head, observed.head_desired)
    worker_ok = _enough(observed.worker, observed.worker_desired,
                        None if floors is None else floors.get("", 0))
    groups_waiting = [
        g for g, desired, deployment in observed.groups
        if not _enough(deployment, desired, None if floors is None else floors.get(g, 0))
    ]
    if floors is not None and not observed.suspended and not _settled(observed.autoscaler, 1):
        groups_waiting.append("the autoscaler")
    failure = (
        observed.error
        or _failure(observed.head)
        or _failure(observed.worker)
        or next((_failure(d) for _, _, d in observed.groups if _failure(d)), None)
    )
    if failure:
        reason = observed.error_reason if observed.error else "DeploymentFailure"
        health = _merge(prev_conds, COND_HEALTH, "False", reason, failure, now)
    elif observed.suspended:
        running = sum(
            replica_counts(d)["replicas"]
            for d in (observed.head, observed.worker, *(d for _, _, d in observed.groups))
        )
        message = (
            "suspended (spec.suspend: true): no pod runs; set spec.suspend to false to resume"
            if running == 0
            else f"suspending (spec.suspend: true): {running} pod(s) still stopping"
        )
        health = _merge(prev_conds, COND_HEALTH, "False", REASON_SUSPENDED, message, now)
    elif head_ok and worker_ok and not groups_waiting:
        health = _merge(
            prev_conds,
            COND_HEALTH,
            "True",
            "AllReplicasAvailable",
            "head and workers are all available",
            now,
        )
    else:
        waiting = [role for role, ok in (("head", head_ok), ("workers", worker_ok)) if not ok]
        waiting += [g if g == "the autoscaler" else f"worker group {g!r}" for g in groups_waiting]
        health = _merge(
            prev_conds,
            COND_HEALTH,
            "Unknown",
            "Progressing",
            f"waiting for {' and '.join(waiting)} to be available",
            now,
        )
    conditions.insert(0, health)

    head_counts = replica_counts(observed.head)
    worker_counts = replica_counts(observed.worker)
    groups = [
        {"name": g, "desired": desired, **replica_counts(d)} for g, desired, d in observed.groups
    ]
    ready = worker_counts["readyReplicas"] + sum(g["readyReplicas"] for g in groups)
    desired = observed.worker_desired + sum(g["desired"] for g in groups)
    status: Obj = {
        "head": head_counts,
        "worker": worker_counts,
        "conditions": conditions,
        "startTime": previous.get("startTime", now),
        "lastReconcileTime": previous.get("lastReconcileTime", now),
        "observedGeneration": observed.generation,
        "headReady": f"{head_counts['readyReplicas']}/{observed.head_desired}",
        # Every worker, spec.worker's and the groups' (kubectl get rays shows this column).
        "workersReady": f"{ready}/{desired}",
        "health": health["status"],
        "workerSelector": observed.worker_selector,
    }
    if groups:
        status["workerGroups"] = groups
    elif previous.get("workerGroups"):
        status["workerGroups"] = None  # a merge patch removes a key only when told so
    if observed.autoscaling is not None:
        status["autoscaling"] = observed.autoscaling
    elif previous.get("autoscaling"):
        status["autoscaling"] = None
    return status


def _autoscaling_conditions(prev_conds: dict[str, Obj], observed: Observed, now: str) -> list[Obj]:
    """Whether the autoscaler runs, and whether Ray asks for what no group can give."""
    src = _group_available(observed.autoscaler)
    available = _merge(
        prev_conds,
        COND_AUTOSCALER_AVAILABLE,
        src.get("status", "Unknown") if src else "Unknown",
        src.get("reason") if src else None,
        src.get("message") if src else None,
        now,
    )
    if observed.infeasible:
        feasible = _merge(prev_conds, COND_REQUESTS_FEASIBLE, "False", REASON_INFEASIBLE,
                          observed.infeasible, now)
    else:
        feasible = _merge(prev_conds, COND_REQUESTS_FEASIBLE, "True", "Feasible",
                          "every request Ray's autoscaler sees fits a worker group", now)
    return [available, feasible]


def status_changed(previous: Obj | None, new: Obj) -> bool:
    """Whether writing ``new`` would change anything but the reconcile timestamp."""
    if not previous:
        return True
    # A key written as null (to remove it) and one that is absent say the same.
    keys = (set(previous) | set(new)) - {"lastReconcileTime"}
    return any(previous.get(k) != new.get(k) for k in keys)
