"""The operator's part in autoscaling: the pods Ray's autoscaler sees, and how workers leave.

Ray's autoscaler (its own pod, see ``builders.autoscaling``) writes a group's ``replicas`` and
names the pods it drained in ``scaleStrategy.workersToDelete``. Here the operator:

- lists the cluster's pods for it in ``status.autoscaling.nodes`` (the autoscaler may read its
  ``Ray`` and nothing else);
- sets the ``ray.kubeflow.org/in-service`` readiness gate True on every new worker;
- on a named pod sets the lowest ``pod-deletion-cost``, then the gate and ``Ready`` False, and
  only once both show lowers the Deployment's count by as many pods: the ReplicaSet controller
  removes pods that are not ready first, and among them those of lowest cost, so it removes
  exactly the named ones (only a pod not yet running, which holds no work, ranks before them);
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
    ANNOTATION_DELETION_COST,
    ANNOTATION_INFEASIBLE,
    GATE_IN_SERVICE,
    LABEL_AUTOSCALING,
    LABEL_CLUSTER,
    LABEL_ROLE,
    REASON_INFEASIBLE,
    REASON_REPLICAS_CLAMPED,
    REASON_SCALE_DOWN_HELD,
    REASON_SCALED_DOWN,
    REASON_SCALED_UP,
    ROLE_HEAD,
    ROLE_WORKER,
)
from ray_operator.builders.autoscaling import LOWEST_DELETION_COST as LOWEST_COST
from ray_operator.builders.autoscaling import (
    allowed_replicas,
    gate_state,
    marked_for_removal,
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


def _deployment_rolling(deployment: Obj) -> bool:
    """A rollout under way: its old and new ReplicaSets would both shrink, not by rank."""
    status = deployment.get("status") or {}
    seen = int(status.get("observedGeneration", 0)) >= int(
        deployment["metadata"].get("generation", 0))
    replicas = int(status.get("replicas", 0) or 0)
    updated = int(status.get("updatedReplicas", 0) or 0)
    return not seen or updated < replicas


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

    # --- the pods ---------------------------------------------------------------------------
    async def tend(self, plan: ClusterPlan) -> str | None:
        """Gate new workers in, mark named ones for removal; what failed, if anything."""
        named = {name for g in groups_of(plan) for name in g.pods.to_delete}
        for pod in list(self.pods_of((plan.namespace, plan.name))):
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") or (meta.get("labels") or {}).get(LABEL_ROLE) in (
                None, ROLE_HEAD
            ):
                continue
            try:
                if meta["name"] in named:
                    await self._mark(pod)
                elif gate_state(pod) is None:
                    await self._gate(pod, "True", "InService", "a worker of the cluster")
            except KubeError as exc:
                if exc.not_found:
                    continue
                return f"Failed to prepare pod {meta['name']} for Ray's autoscaler: {exc.message}"
        return None

    async def _mark(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if marked_for_removal(pod):
            return
        if (meta.get("annotations") or {}).get(ANNOTATION_DELETION_COST) != LOWEST_COST:
            patch = {"metadata": {"annotations": {ANNOTATION_DELETION_COST: LOWEST_COST}}}
            pod = await self.kube.patch(POD, meta["name"], patch, meta["namespace"])
            self.pods.remember(pod)
        await self._gate(pod, "False", "DrainedByRay",
                         "Ray drained this worker and its autoscaler asked for its removal")

    async def _gate(self, pod: Obj, status: str, reason: str, message: str) -> None:
        now = now_rfc3339()
        conditions = [{"type": GATE_IN_SERVICE, "status": status, "reason": reason,
                       "message": message, "lastTransitionTime": now}]
        if status == "False":
            # What the kubelet concludes from the gate, written at once: the ReplicaSet
            # controller ranks by Ready, and the count drops only once this shows.
            conditions.append({"type": "Ready", "status": "False",
                               "reason": "ReadinessGatesNotReady", "lastTransitionTime": now,
                               "message": f"the gate {GATE_IN_SERVICE} is False"})
        meta = pod["metadata"]
        updated = await self.kube.patch(POD, meta["name"], {"status": {"conditions": conditions}},
                                        meta["namespace"], subresource="status",
                                        patch_type="strategic")
        self.pods.remember(updated)

    # --- the counts -------------------------------------------------------------------------
    def counts(self, owner: Obj, plan: ClusterPlan) -> dict[str, int]:
        """Deployment name -> the count it may take now (see allowed_replicas)."""
        key = (plan.namespace, plan.name)
        pods = [p for p in self.pods_of(key) if not p["metadata"].get("deletionTimestamp")]
        allowed = {}
        for group in groups_of(plan):
            if group.pods.requested is not None:
                self.events.emit_once(
                    owner, "Warning", REASON_REPLICAS_CLAMPED,
                    f"{group.path}.replicas {group.pods.requested} is outside "
                    f"[minReplicas {group.pods.minimum}, maxReplicas "
                    f"{group.pods.maximum}]: the group runs {group.pods.replicas}")
            deployment = self.deployments.get(plan.namespace, group.deployment)
            current = None if deployment is None else int(deployment["spec"].get("replicas", 0))
            mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_ROLE)
                    == group.node_type]
            removable = sum(1 for p in mine if p["metadata"]["name"] in group.pods.to_delete
                            and marked_for_removal(p))
            if deployment is not None and _deployment_rolling(deployment):
                removable = 0
            count = allowed_replicas(group.pods.replicas, current, removable)
            if plan.suspended:
                count = 0  # the user stops every pod: no worker is kept for Ray's choice
            allowed[group.deployment] = count
            if current is not None and count > group.pods.replicas and not any(
                p["metadata"]["name"] in group.pods.to_delete for p in mine
            ):
                self.events.emit_once(
                    owner, "Normal", REASON_SCALE_DOWN_HELD,
                    f"{group.path}.replicas is {group.pods.replicas} but {count} "
                    "workers run: with spec.autoscaling a worker leaves only once Ray has "
                    "drained it (idle for idleTimeoutSeconds) and its autoscaler names it in "
                    "scaleStrategy.workersToDelete")
        return allowed

    def report_scaling(self, owner: Obj, plan: ClusterPlan, before: dict[str, int | None],
                       after: dict[str, int]) -> None:
        """ScaledUp / ScaledDown events for the counts just written, with their reason."""
        if plan.suspended:
            return  # Health says Suspended: the counts are the user's, not Ray's
        key = (plan.namespace, plan.name)
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
                continue
            leaving = sorted(p["metadata"]["name"] for p in self.pods_of(key)
                             if p["metadata"]["name"] in group.pods.to_delete)
            self.events.emit(
                owner, "Normal", REASON_SCALED_DOWN,
                f"worker group {group.node_type}: {old} -> {new} workers; leaving, drained by "
                f"Ray: {', '.join(leaving) or 'none'}")

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
