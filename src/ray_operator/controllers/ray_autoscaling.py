"""The operator's part in autoscaling: the pods Ray's autoscaler sees, and how workers leave.

Ray's autoscaler (its own pod, see ``builders.autoscaling``) writes a group's ``replicas`` and
names the pods it drained in ``scaleStrategy.workersToDelete``. Here the operator:

- lists the cluster's pods for it in ``status.autoscaling.nodes`` (the autoscaler may read its
  ``Ray`` and nothing else);
- deletes the named pods itself, those and no other (a uid precondition: never a namesake), and
  lowers the Deployment's count by as many as leave. The ReplicaSet controller is thus not
  left to choose among running workers: if it sees a named pod go before the count drops, it
  makes a replacement, and removes that one when the count drops. That one ranks first because
  it is not scheduled: new workers carry the operator's scheduling gate, lifted here only when
  no removal is pending and no more pods live than the count. A removal and a launch that land
  together, or a removal at ``minReplicas``, replace the drained worker by a new one, as Ray
  asked;
- holds any other drop of the count (a hand edit) and says so; never lowers a Deployment that is
  rolling out (its ReplicaSets would be scaled in proportion, not by rank);
- reports counts outside ``[minReplicas, maxReplicas]``, scale events and infeasible requests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ray_operator.api.constants import (
    ANNOTATION_AUTOSCALER_REQUEST,
    ANNOTATION_INFEASIBLE,
    LABEL_AUTOSCALING,
    LABEL_CLUSTER,
    LABEL_ROLE,
    REASON_INFEASIBLE,
    REASON_REPLICAS_CLAMPED,
    REASON_SCALE_DOWN_HELD,
    REASON_SCALED_DOWN,
    REASON_SCALED_UP,
    ROLE_WORKER,
)
from ray_operator.builders.autoscaling import (
    allowed_replicas,
    gate_held,
    gate_lift_patch,
    node_state,
)
from ray_operator.builders.ray_cluster import (
    ClusterPlan,
    RoleSpec,
    group_name,
    group_role,
    worker_name,
)
from ray_operator.kube import POD, Kube, KubeError
from ray_operator.runtime.events import EventRecorder, now_rfc3339
from ray_operator.runtime.informer import Informer

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]


@dataclass(frozen=True)
class Group:
    """One autoscaled worker group of a plan."""

    node_type: str  # worker, worker-<group>: its pods' role label
    deployment: str
    pods: RoleSpec
    path: str  # where its spec is: spec.worker, spec.workerGroups[i]


def groups_of(plan: ClusterPlan) -> list[Group]:
    """spec.worker and each of spec.workerGroups, as Ray node types."""
    found = [Group(ROLE_WORKER, worker_name(plan.name), plan.worker, "spec.worker")]
    found += [Group(group_role(g.name), group_name(plan.name, g.name), g.pods,
                    f"spec.workerGroups[{i}]")
              for i, g in enumerate(plan.groups)]
    return found


def _observed(deployment: Obj) -> bool:
    """The Deployment controller has seen the Deployment's latest spec."""
    status = deployment.get("status") or {}
    return int(status.get("observedGeneration", 0)) >= int(
        deployment["metadata"].get("generation", 0))


def _replicas_not_updated(deployment: Obj) -> bool:
    """Some of its pods are not of its latest template (as its status last said)."""
    status = deployment.get("status") or {}
    return int(status.get("updatedReplicas", 0) or 0) < int(status.get("replicas", 0) or 0)


def _deployment_rolling(deployment: Obj) -> bool:
    """A rollout under way: its old and new ReplicaSets would both shrink, not by rank."""
    return not _observed(deployment) or _replicas_not_updated(deployment)


def _template_rolling(deployment: Obj) -> bool:
    """A rollout of a new template, as the Deployment controller has seen it.

    Not a count the controller has yet to see: that may be a lowered one, whose surplus the
    ReplicaSet is about to remove.
    """
    return _observed(deployment) and _replicas_not_updated(deployment)


def infeasible_message(text: str | None) -> str | None:
    """The infeasible requests the autoscaler reported, in words (None: none)."""
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return None
    if not isinstance(found, list) or not found:
        return None
    parts = []
    for item in found:
        if not isinstance(item, dict):
            continue
        shape = json.dumps(item.get("resources"), sort_keys=True)
        parts.append(f"{item.get('count', 1)} {item.get('kind', 'request')}(s) asking for {shape}")
    return (
        "Ray's autoscaler cannot serve " + "; ".join(parts) + ": no worker group offers that "
        "much on one node (raise a group's resources or add a group); these are not retried"
    )


def _last_request(owner: Obj) -> Obj:
    """The last launch or removal Ray's autoscaler asked for ({} when none is written)."""
    text = ((owner.get("metadata") or {}).get("annotations") or {}).get(
        ANNOTATION_AUTOSCALER_REQUEST)
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


@dataclass
class Autoscaling:
    """Pods of autoscaled clusters: indexed by cluster, tended, listed for the autoscaler."""

    kube: Kube
    events: EventRecorder
    pods: Informer
    deployments: Informer
    cluster_pods: dict[Key, set[str]] = field(default_factory=dict)
    # Ray uid -> the infeasible requests last reported (an event per change, not per write).
    infeasible: dict[str, str] = field(default_factory=dict)
    # Ray -> Deployment -> the pods deleted for Ray and the count that leaves them out: until
    # the Deployment shows that count they still lower it, gone from the cache and from
    # workersToDelete or not (a failed write must not turn into a held scale-down).
    removed: dict[Key, dict[str, tuple[frozenset[str], int]]] = field(default_factory=dict)

    def on_pod(self, event_type: str, body: Obj) -> Key | None:
        """Index a pod of an autoscaled cluster by its cluster; that cluster's key.

        None for the other pods of the shared cache (runner pods, other clusters' pods).
        """
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        cluster = labels.get(LABEL_CLUSTER)
        if not cluster or labels.get(LABEL_AUTOSCALING) != "true":
            return None
        key = (str(meta["namespace"]), str(cluster))
        names = self.cluster_pods.setdefault(key, set())
        if event_type == "DELETED":
            names.discard(meta["name"])
            if not names:
                del self.cluster_pods[key]
        else:
            names.add(meta["name"])
        return key

    def pods_of(self, key: Key) -> Iterator[Obj]:
        """The cluster's pods in the cache, by name."""
        for name in sorted(self.cluster_pods.get(key, ())):
            pod = self.pods.get(key[0], name)
            if pod is not None:
                yield pod

    def versions(self, key: Key) -> tuple[str, ...]:
        """The cluster's pods' versions (a settled reconcile is redone when one changes)."""
        return tuple(str(p["metadata"].get("resourceVersion")) for p in self.pods_of(key))

    # --- the pods and the counts -------------------------------------------------------------
    async def scale(self, owner: Obj, plan: ClusterPlan) -> tuple[dict[str, int], str | None]:
        """Remove the pods Ray named; Deployment name -> the count it may take now.

        Also what failed, if anything (a pod that could not be deleted keeps its count).
        """
        key = (plan.namespace, plan.name)
        allowed: dict[str, int] = {}
        failed = None
        for group in groups_of(plan):
            deployment = self.deployments.get(plan.namespace, group.deployment)
            current = None if deployment is None else int(deployment["spec"].get("replicas", 0))
            mine = [p for p in self.pods_of(key)
                    if (p["metadata"].get("labels") or {}).get(LABEL_ROLE) == group.node_type]
            named = [p for p in mine if p["metadata"]["name"] in group.pods.to_delete]
            removed = []
            for pod in named:
                if pod["metadata"].get("deletionTimestamp") or plan.suspended:
                    continue
                problem = await self._delete(pod)
                if problem is None:
                    removed.append(pod["metadata"]["name"])
                else:
                    failed = failed or problem
            slots = self.removed.setdefault(key, {})
            earlier, counted_out = slots.pop(group.deployment, (frozenset(), -1))
            if current is not None and current <= counted_out:
                earlier = frozenset()  # that count is written: they are counted out
            gone = earlier | set(removed)
            leaving = gone | {p["metadata"]["name"] for p in self.pods_of(key)
                              if p["metadata"]["name"] in group.pods.to_delete}
            if deployment is not None and _deployment_rolling(deployment):
                leaving = frozenset()
            count = allowed_replicas(group.pods.replicas, current, len(leaving))
            if plan.suspended:
                count = 0  # the user stops every pod: no worker is kept for Ray's choice
            if gone:
                slots[group.deployment] = (frozenset(gone), count)
            allowed[group.deployment] = count
            if removed:
                names = ", ".join(sorted(removed))
                change = (f"{current} -> {count} workers; leaving" if current is not None
                          and count < current else f"{count} workers; replaced")
                self.events.emit(owner, "Normal", REASON_SCALED_DOWN,
                                 f"worker group {group.node_type}: {change}, drained by Ray: "
                                 f"{names}")
            if (deployment is not None and current is not None and not plan.suspended
                    and group.deployment not in slots):
                failed = await self._lift_gates(mine, deployment, current, count) or failed
            if current is not None and count > group.pods.replicas and not named:
                self.events.emit_once(
                    owner, "Normal", REASON_SCALE_DOWN_HELD,
                    f"{group.path}.replicas is {group.pods.replicas} but {count} "
                    "workers run: with spec.autoscaling a worker leaves only once Ray has "
                    "drained it (idle for idleTimeoutSeconds) and its autoscaler names it in "
                    "scaleStrategy.workersToDelete")
        return allowed, failed

    async def _lift_gates(self, mine: list[Obj], deployment: Obj, current: int,
                          count: int) -> str | None:
        """Let the group's gated pods be scheduled, once its ReplicaSet has none to remove.

        No removal is pending here (the caller checked), the count is not lowered now, and no
        more pods live than the count: the ReplicaSet will not remove one, so a pod let run
        now cannot be the one that ranks ahead of a busy worker. A pod the cache has not seen
        yet stays gated. In a rollout the Deployment controller removes old pods itself (the
        user changed the template), and the new ones must run for it to go on.
        """
        alive = [p for p in mine if not p["metadata"].get("deletionTimestamp")
                 and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]
        settled = count >= current and len(alive) <= current
        if not settled and not _template_rolling(deployment):
            return None
        failed = None
        for pod in alive:
            if gate_held(pod):
                failed = await self._lift(pod) or failed
        return failed

    async def _lift(self, pod: Obj) -> str | None:
        meta = pod["metadata"]
        try:
            updated = await self.kube.patch(POD, meta["name"], gate_lift_patch(pod),
                                            meta["namespace"], patch_type="json")
        except KubeError as exc:
            if exc.not_found or exc.status in (409, 422):
                return None  # gone, or changed since read (the uid or gates test): its event
            return f"Failed to let pod {meta['name']} be scheduled: {exc.message}"
        self.pods.remember(updated)
        return None

    async def _delete(self, pod: Obj) -> str | None:
        meta = pod["metadata"]
        try:
            await self.kube.delete(POD, meta["name"], meta["namespace"], uid=meta.get("uid"))
        except KubeError as exc:
            if exc.conflict:
                return None  # another pod of that name now: not the one Ray drained
            return f"Failed to delete pod {meta['name']}, which Ray drained: {exc.message}"
        # Terminating from now on, in the cache too (its watch event says the same soon).
        self.pods.remember({**pod, "metadata": {**meta, "deletionTimestamp": now_rfc3339()}})
        return None

    def forget(self, key: Key, uid: str) -> None:
        """A Ray deleted: nothing of it is kept."""
        self.removed.pop(key, None)
        self.infeasible.pop(uid, None)

    def report_clamped(self, owner: Obj, plan: ClusterPlan) -> None:
        """A Warning for each group whose written count lies outside its bounds."""
        for group in groups_of(plan):
            if group.pods.requested is None:
                continue
            high = "unbounded" if group.pods.maximum is None else group.pods.maximum
            self.events.emit_once(
                owner, "Warning", REASON_REPLICAS_CLAMPED,
                f"{group.path}.replicas {group.pods.requested} is outside "
                f"[minReplicas {group.pods.minimum}, maxReplicas {high}]: the group runs "
                f"{group.pods.replicas}")

    def report_scaling(self, owner: Obj, plan: ClusterPlan, before: dict[str, int | None],
                       after: dict[str, int]) -> None:
        """ScaledUp events for the counts just raised, with their reason.

        ScaledDown comes with the pods' removal (see :meth:`scale`).
        """
        if plan.suspended:
            return  # Health says Suspended: the counts are the user's, not Ray's
        asked = _last_request(owner)
        for group in groups_of(plan):
            old, new = before.get(group.deployment), after.get(group.deployment)
            if old is None or new is None or old == new:
                continue
            if new > old:
                launched = int((asked.get("launch") or {}).get(group.node_type) or 0)
                why = (f"Ray's autoscaler asked for {launched} more (tasks, actors, placement "
                       "groups or request_resources wait for resources)" if launched
                       else f"replicas set to {group.pods.replicas}")
                self.events.emit(
                    owner, "Normal", REASON_SCALED_UP,
                    f"worker group {group.node_type}: {old} -> {new} workers (at most "
                    f"{group.pods.maximum}): {why}")

    def report_infeasible(self, owner: Obj) -> str | None:
        """The infeasible requests on the Ray, as a Warning event when they change; in words."""
        text = ((owner.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_INFEASIBLE)
        message = infeasible_message(text)
        uid = str(owner["metadata"].get("uid"))
        if message is not None and self.infeasible.get(uid) != message:
            self.events.emit(owner, "Warning", REASON_INFEASIBLE, message)
        if message is None:
            self.infeasible.pop(uid, None)
        else:
            self.infeasible[uid] = message
        return message

    # --- what the autoscaler reads ----------------------------------------------------------
    def status(self, plan: ClusterPlan, counts: dict[str, int]) -> Obj:
        """``status.autoscaling``: each group's bounds and counts, and the cluster's pods."""
        key = (plan.namespace, plan.name)
        pods = [p for p in self.pods_of(key) if not p["metadata"].get("deletionTimestamp")]
        nodes = []
        for pod in pods:
            role = (pod["metadata"].get("labels") or {}).get(LABEL_ROLE)
            if not role:
                continue
            node: Obj = {"pod": pod["metadata"]["name"], "type": role, "state": node_state(pod)}
            ip = (pod.get("status") or {}).get("podIP")
            if ip:
                node["ip"] = ip
            nodes.append(node)
        groups = []
        for group in groups_of(plan):
            current = sum(1 for n in nodes if n["type"] == group.node_type)
            groups.append({
                "name": group.node_type,
                "minReplicas": group.pods.minimum,
                "maxReplicas": group.pods.maximum if group.pods.maximum is not None
                else group.pods.replicas,
                "desired": counts.get(group.deployment, group.pods.replicas),
                "current": current,
            })
        return {"groups": groups, "nodes": nodes}
