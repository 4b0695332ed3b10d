"""Level-triggered reconcile of ``Ray`` resources: compare desired children with what exists.

The reconciler keeps the last seen version of every ``Ray`` and of every child it manages (fed
by watch events), so a steady cluster costs no API request at all: it reads, diffs, and only
writes what differs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from ray_operator.api.constants import (
    LABEL_CLUSTER,
    REASON_CREATED,
    REASON_FAILED_CREATE,
    REASON_FAILED_UPDATE,
    REASON_INVALID_SPEC,
    REASON_UNKNOWN_FIELD,
    REASON_UPDATED,
)
from ray_operator.api.validation import Report, validate_ray
from ray_operator.builders.ray_cluster import (
    ClusterPlan,
    build_children,
    head_name,
    plan_cluster,
    spec_hash,
    worker_name,
    worker_selector,
)
from ray_operator.builders.ray_status import Observed, compute_status, status_changed
from ray_operator.controllers.events import EventRecorder, now_rfc3339
from ray_operator.controllers.workqueue import WorkQueue
from ray_operator.kube import DEPLOYMENT, RAY, SERVICE, Kind, Kube, KubeError
from ray_operator.settings import Settings

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
ChildKey = tuple[str, str, str]  # (kind, namespace, name)

_KINDS: dict[str, Kind] = {"Deployment": DEPLOYMENT, "Service": SERVICE}
# The fields of a Service port the operator writes (all of them explicitly).
_PORT_KEYS = ("name", "port", "targetPort", "protocol")


@dataclass
class RayReconciler:
    """Holds the watch caches and reconciles one ``Ray`` at a time per key."""

    kube: Kube
    settings: Settings
    rays: dict[Key, Obj] = field(default_factory=dict)
    children: dict[ChildKey, Obj] = field(default_factory=dict)
    # Generation of each child right after our last write: a higher one means a hand edit.
    written_generation: dict[ChildKey, int] = field(default_factory=dict)
    # (key, generation, message) already reported, so a timer does not repeat warnings.
    reported: set[tuple[Key, int, str]] = field(default_factory=set)
    # Seconds between two status writes of one cluster (bursts of child events are merged).
    status_interval: float = 1.0
    last_status_write: dict[Key, float] = field(default_factory=dict)
    # Clusters whose children have not been written yet. While there are any, status writes
    # and events wait (for at most status_hold seconds): during a burst of new clusters the
    # apiserver's time goes to the objects users wait for, then to the bookkeeping.
    creating: set[Key] = field(default_factory=set)
    held_status: dict[Key, float] = field(default_factory=dict)
    status_hold: float = 10.0
    # Validation and desired children per cluster, for the generation they were built from:
    # child events trigger many reconciles of an unchanged spec.
    plans: dict[Key, tuple[str, int, Validated]] = field(default_factory=dict)
    queue: WorkQueue = field(init=False)
    events: EventRecorder = field(init=False)

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self._reconcile_key)
        self.events = EventRecorder(self.kube, max_hold_seconds=self.status_hold)

    # --- watch feed -------------------------------------------------------------------------
    def on_ray_event(self, event_type: str | None, body: Obj) -> None:
        """A ``Ray`` changed (or was listed): remember it and reconcile it."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.rays.pop(key, None)
            self.last_status_write.pop(key, None)
            self.held_status.pop(key, None)
            self.plans.pop(key, None)
            self.reported = {r for r in self.reported if r[0] != key}
            self._children_written(key)
            return
        self.rays[key] = body
        if ("Deployment", key[0], worker_name(key[1])) not in self.children:
            if not self.creating:
                self.events.hold()
            self.creating.add(key)
        self.queue.trigger(key)

    def on_child_event(self, event_type: str | None, body: Obj) -> None:
        """A child changed: remember it and reconcile its cluster (repairs drift)."""
        meta = body["metadata"]
        ckey = (body["kind"], meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self.children.pop(ckey, None)
            self.written_generation.pop(ckey, None)
        else:
            self.children[ckey] = body
        cluster = (meta.get("labels") or {}).get(LABEL_CLUSTER)
        key = (meta["namespace"], cluster)
        if cluster and key in self.rays and not self._held(key):
            self.queue.trigger(key)

    async def close(self) -> None:
        """Post the events still pending."""
        await self.events.drain()

    def resync(self) -> None:
        """Reconcile every known cluster (the periodic safety net)."""
        for key in list(self.rays):
            self.queue.trigger(key)

    # --- reconcile --------------------------------------------------------------------------
    async def _reconcile_key(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        body = self.rays.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._children_written(key)
            return
        try:
            await self.reconcile(body)
        finally:
            self._children_written(key)

    def _children_written(self, key: Hashable) -> None:
        """``key`` no longer waits for its children: once none does, let status and events go."""
        if key not in self.creating:
            return
        self.creating.discard(key)
        if not self.creating:
            self.events.release()
            held, self.held_status = list(self.held_status), {}
            for waiting in held:
                self.queue.trigger(waiting)

    def _held(self, key: Key) -> bool:
        """Whether ``key``'s status write or child-triggered reconcile waits for the burst."""
        if not self.creating or key in self.creating:
            return False
        since = self.held_status.get(key)
        if since is None:
            self.held_status[key] = time.monotonic()
            # Released when the burst ends, or by this at the latest.
            asyncio.get_running_loop().call_later(self.status_hold + 0.1, self.queue.trigger, key)
            return True
        return time.monotonic() - since < self.status_hold

    def _validated(self, body: Obj, key: Key, generation: int) -> Validated:
        uid = str(body["metadata"].get("uid", ""))
        cached = self.plans.get(key)
        if cached and cached[0] == uid and cached[1] == generation:
            return cached[2]
        report = validate_ray(body)
        plan = None
        if report.ok and report.resource is not None:
            plan = plan_cluster(report.resource, self.settings.ray_image, report.unknown_fields)
        validated = Validated(report, plan, build_children(plan) if plan else [])
        self.plans[key] = (uid, generation, validated)
        return validated

    async def reconcile(self, body: Obj) -> None:
        """Bring one cluster's children to the desired state and write its status."""
        meta = body["metadata"]
        key: Key = (meta["namespace"], meta["name"])
        generation = int(meta.get("generation", 0))
        validated = self._validated(body, key, generation)
        report = validated.report
        for path in report.unknown_fields:
            await self._report_once(
                body,
                key,
                generation,
                "Warning",
                REASON_UNKNOWN_FIELD,
                f"unknown field {path} is ignored (not part of a Kubernetes pod template)",
            )
        head_desired, worker_desired = _written_replicas(body)
        error: str | None = None
        error_reason = REASON_INVALID_SPEC
        plan = validated.plan
        if plan is None:
            error = report.message()
            await self._report_once(body, key, generation, "Warning", REASON_INVALID_SPEC, error)
        else:
            head_desired, worker_desired = plan.head.replicas, plan.worker.replicas
            # The children do not depend on each other: write them side by side.
            results = await asyncio.gather(*(self._ensure(body, d) for d in validated.children))
            failure = next((r for r in results if r), None)
            if failure:
                error, error_reason = failure
        self._children_written(key)
        ns, name = key
        observed = Observed(
            generation=generation,
            head_desired=head_desired,
            worker_desired=worker_desired,
            head=self.children.get(("Deployment", ns, head_name(name))),
            worker=self.children.get(("Deployment", ns, worker_name(name))),
            worker_selector=worker_selector(name),
            error=error,
            error_reason=error_reason,
        )
        previous = body.get("status") or {}
        now = now_rfc3339()
        status = compute_status(previous, observed, now)
        if status_changed(previous, status):
            if self._held(key):
                return
            self.held_status.pop(key, None)
            # While replica counts climb, write at most once per interval per cluster; the
            # deferred reconcile writes whatever is true by then (a burst costs one write).
            wait = self.last_status_write.get(key, -1e9) + self.status_interval - time.monotonic()
            if wait > 0:
                asyncio.get_running_loop().call_later(wait, self.queue.trigger, key)
                return
            self.last_status_write[key] = time.monotonic()
            status["lastReconcileTime"] = now
            try:
                updated = await self.kube.patch(
                    RAY, name, {"status": status}, ns, subresource="status"
                )
                self.rays[key] = updated
            except KubeError as exc:
                if not exc.not_found:
                    raise

    async def _report_once(
        self, body: Obj, key: Key, generation: int, kind: str, reason: str, message: str
    ) -> None:
        mark = (key, generation, message)
        if mark in self.reported:
            return
        self.reported.add(mark)
        self.events.emit(body, kind, reason, message)

    async def _ensure(self, owner: Obj, desired: Obj) -> tuple[str, str] | None:
        """Create or repair one child; returns (message, reason) on failure."""
        kind = _KINDS[desired["kind"]]
        meta = desired["metadata"]
        ckey: ChildKey = (desired["kind"], meta["namespace"], meta["name"])
        noun = desired["kind"].lower()
        existing = self.children.get(ckey)
        if existing is None:
            try:
                created = await self.kube.create(kind, desired)
            except KubeError as exc:
                if not exc.conflict:
                    msg = f"Failed to create the {noun} {meta['name']}: {exc.message}"
                    self.events.emit(owner, "Warning", f"{REASON_FAILED_CREATE}", msg)
                    return msg, REASON_FAILED_CREATE
                # Created already (our cache lags behind the watch): read it and compare.
                existing = await self.kube.get(kind, meta["name"], meta["namespace"])
                self.children[ckey] = existing
            else:
                self._remember(ckey, created)
                self.events.emit(
                    owner,
                    "Normal",
                    REASON_CREATED,
                    f"Successfully create the {noun} {meta['name']}",
                )
                return None
        if not self._drifted(ckey, existing, desired):
            return None
        try:
            current = await self.kube.get(kind, meta["name"], meta["namespace"])
            replacement = {**desired, "metadata": {**desired["metadata"]}}
            replacement["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            if desired["kind"] == "Service":
                # clusterIP is immutable and assigned by the apiserver: keep it.
                replacement["spec"] = {
                    **desired["spec"],
                    "clusterIP": current["spec"].get("clusterIP"),
                }
            updated = await self.kube.replace(kind, replacement)
        except KubeError as exc:
            if exc.not_found:
                self.children.pop(ckey, None)
                return None  # deleted meanwhile: the DELETED event triggers a re-create
            if exc.conflict:
                raise  # changed meanwhile: the work queue retries with the newer version
            msg = f"Failed to update the {noun} {meta['name']}: {exc.message}"
            self.events.emit(owner, "Warning", REASON_FAILED_UPDATE, msg)
            return msg, REASON_FAILED_UPDATE
        self._remember(ckey, updated)
        self.events.emit(
            owner,
            "Normal",
            REASON_UPDATED,
            f"Successfully update the {noun} {meta['name']}",
        )
        return None

    def _remember(self, ckey: ChildKey, written: Obj) -> None:
        self.children[ckey] = written
        self.written_generation[ckey] = int(written["metadata"].get("generation", 0))

    def _drifted(self, ckey: ChildKey, existing: Obj, desired: Obj) -> bool:
        if spec_hash(existing) != spec_hash(desired):
            return True
        if desired["kind"] == "Deployment":
            if existing.get("spec", {}).get("replicas") != desired["spec"]["replicas"]:
                return True
            generation = int(existing["metadata"].get("generation", 0))
            seen = self.written_generation.setdefault(ckey, generation)
            if generation > seen:
                return True  # edited by someone else since we wrote it
        elif desired["kind"] == "Service":
            # A Service has no generation to reveal a hand edit: compare what we set.
            spec, want = existing.get("spec", {}), desired["spec"]
            if spec.get("selector") != want["selector"] or spec.get("type") != want["type"]:
                return True
            ports = [{k: p.get(k) for k in _PORT_KEYS} for p in spec.get("ports") or []]
            if ports != want["ports"]:
                return True
        return False


@dataclass(frozen=True)
class Validated:
    """What a spec amounts to: the validation report, and the plan and children if valid."""

    report: Report
    plan: ClusterPlan | None
    children: list[Obj]


def _written_replicas(body: Obj) -> tuple[int, int]:
    """Head and worker counts as written, for the status of a spec that failed validation."""
    spec = body.get("spec") or {}

    def count(role: str, default: int) -> int:
        value = (spec.get(role) or {}).get("replicas")
        return value if isinstance(value, int) else default

    return count("head", 1), count("worker", 0)
