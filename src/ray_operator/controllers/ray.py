"""Level-triggered reconcile of ``Ray`` resources: compare desired children with what exists.

Reads come from the shared watch caches (Rays, and the Deployments and Services labelled as
ours), so a steady cluster costs no API request: the reconciler compares, and writes only what
differs. A child that exists but is not controlled by this ``Ray`` is never touched.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Final

from ray_operator.api.constants import (
    ANNOTATION_DEFAULTS,
    LABEL_AUTOSCALING,
    LABEL_CLUSTER,
    LABEL_MANAGED_BY,
    LABEL_WORKER_GROUP,
    MANAGED_BY,
    REASON_CREATED,
    REASON_DELETED,
    REASON_FAILED_CREATE,
    REASON_FAILED_DELETE,
    REASON_FAILED_UPDATE,
    REASON_INVALID_SPEC,
    REASON_UNKNOWN_FIELD,
    REASON_UPDATED,
    ROLE_HEAD,
    ROLE_WORKER,
)
from ray_operator.api.pod_fields import FieldTable
from ray_operator.api.ray import RayResource
from ray_operator.api.validation import Report, validate_ray
from ray_operator.autoscaling import provider_code
from ray_operator.builders.autoscaling import CONFIG_KEY, autoscaler_name
from ray_operator.builders.default_templates import HEAD_CONTAINER, WORKER_CONTAINER
from ray_operator.builders.defaults import (
    Defaults,
    DefaultsError,
    asks_for_current,
    current_defaults,
    legacy_defaults,
    read_defaults,
)
from ray_operator.builders.drift import controller_name, controller_uid, differences, replacement
from ray_operator.builders.gcs_cleanup import FINALIZER as GCS_FINALIZER
from ray_operator.builders.ray_cluster import (
    AUTH_TOKEN_KEY,
    ClusterPlan,
    auth_secret_name,
    build_children,
    group_name,
    head_name,
    network_policy_name,
    plan_cluster,
    roles_using_defaults,
    setting_leftovers,
    with_token_secret,
    worker_name,
    worker_selector,
)
from ray_operator.builders.ray_status import Observed, compute_status, status_changed
from ray_operator.controllers.gcs_cleanup import RedisCleanup
from ray_operator.controllers.ray_autoscaling import Autoscaling, groups_of
from ray_operator.kube import (
    CONFIGMAP,
    DEPLOYMENT,
    NETWORK_POLICY,
    RAY,
    ROLE,
    ROLE_BINDING,
    SECRET,
    SERVICE,
    SERVICE_ACCOUNT,
    Kind,
    Kube,
    KubeError,
)
from ray_operator.runtime.events import EventRecorder, now_rfc3339
from ray_operator.runtime.informer import Informer
from ray_operator.runtime.workqueue import Backoff, WorkQueue
from ray_operator.settings import Settings

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

# Children are ours when they carry both labels: the watch asks the apiserver for those only.
CHILD_SELECTOR: Final = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_CLUSTER}"
REASON_CHILD_CONFLICT: Final = "ChildConflict"
# Seconds before an autoscaled cluster is looked at again while the pod cache is being listed.
POD_CACHE_RETRY: Final = 1.0
REASON_INVALID_DEFAULTS: Final = "InvalidDefaults"
_KINDS: Final[dict[str, Kind]] = {
    "Deployment": DEPLOYMENT,
    "Service": SERVICE,
    "Secret": SECRET,
    "NetworkPolicy": NETWORK_POLICY,
    "ConfigMap": CONFIGMAP,
    "ServiceAccount": SERVICE_ACCOUNT,
    "Role": ROLE,
    "RoleBinding": ROLE_BINDING,
}
# Children that exist only while the spec asks for them (spec.auth, spec.networkPolicy,
# spec.autoscaling).
_OPTIONAL: Final = (
    ("Secret", auth_secret_name),
    ("NetworkPolicy", network_policy_name),
    ("Deployment", autoscaler_name),
    ("ConfigMap", autoscaler_name),
    ("RoleBinding", autoscaler_name),
    ("Role", autoscaler_name),
    ("ServiceAccount", autoscaler_name),
)
# Written before the pods that need them, in this order: the token Secret (its uid goes on the
# templates), the NetworkPolicy (no pod runs before it: closed, never open), the autoscaler's
# config and identity; a RoleBinding only once its Role exists (the apiserver checks its rules).
_STAGES: Final = (
    frozenset({"Secret", "NetworkPolicy", "ConfigMap", "ServiceAccount", "Role"}),
    frozenset({"RoleBinding"}),
)


@dataclass(frozen=True)
class ChildFailure:
    """Why one child could not be made what it should be."""

    reason: str
    message: str


@dataclass(frozen=True)
class Validated:
    """What a spec amounts to: the validation report, and the plan and children if valid."""

    report: Report
    plan: ClusterPlan | None
    children: list[Obj]


@dataclass
class RayController:
    """Reconciles one ``Ray`` at a time per key, from the shared caches."""

    kube: Kube
    settings: Settings
    events: EventRecorder
    rays: Informer
    deployments: Informer
    services: Informer
    # The token Secrets (metadata only: the operator never holds a token) and NetworkPolicies.
    secrets: Informer
    network_policies: Informer
    # The Jobs that remove a deleted Ray's GCS keys from Redis.
    jobs: Informer
    # spec.autoscaling: the autoscaler's ConfigMap, identity and rights, and the cluster's pods.
    configmaps: Informer
    service_accounts: Informer
    roles: Informer
    role_bindings: Informer
    pods: Informer
    # The pod template fields the apiserver knows (read at start; None: the shipped table).
    fields: FieldTable | None = None
    # Seconds between two status writes of one cluster (bursts of child events are merged).
    status_interval: float = 1.0
    # While new clusters still wait for their children, status writes and events wait too (for
    # at most status_hold seconds): in a burst, the apiserver's time goes to the objects users
    # wait for first, then to the bookkeeping.
    status_hold: float = 10.0
    name: str = "ray"
    queue: WorkQueue = field(init=False)
    redis: RedisCleanup = field(init=False)
    autoscaling: Autoscaling = field(init=False)
    last_status_write: dict[Key, float] = field(default_factory=dict)
    creating: set[Key] = field(default_factory=set)
    held_status: dict[Key, float] = field(default_factory=dict)
    # Validation and desired children per cluster, for the spec and defaults they came from.
    plans: dict[Key, tuple[str, int, str, Validated]] = field(default_factory=dict)
    group_deployments: dict[Key, set[str]] = field(default_factory=dict)
    # Versions of a Ray and its children after a reconcile that found everything as it should
    # be: a resync of an unchanged cluster then costs a lookup, not a compare.
    settled: dict[Key, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self.name, self._reconcile_key)
        self.rays.subscribe(self._on_ray)
        for children in (
            self.deployments, self.services, self.secrets, self.network_policies, self.jobs,
            self.configmaps, self.service_accounts, self.roles, self.role_bindings,
        ):
            children.subscribe(self._on_child)
        self.pods.subscribe(self._on_pod)
        self.redis = RedisCleanup(self.kube, self.events, self.rays, self.deployments, self.jobs)
        self.autoscaling = Autoscaling(self.kube, self.events, self.pods, self.deployments)

    # --- watch feed -------------------------------------------------------------------------
    def _on_ray(self, event_type: str, body: Obj, _: Obj | None) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.queue.forget(key)
            self.events.forget(str(body["metadata"].get("uid")))
            self.autoscaling.forget(key, str(body["metadata"].get("uid")))
            self.last_status_write.pop(key, None)
            self.held_status.pop(key, None)
            self.plans.pop(key, None)
            self.settled.pop(key, None)
            self._children_written(key)
            return
        if _asks_for_autoscaling(body):
            self.pods.start()  # the autoscaled clusters' pods: listed from the first one on
        if self.deployments.get(key[0], worker_name(key[1])) is None:
            if not self.creating:
                self.events.hold()
            self.creating.add(key)
        self.queue.add(key)

    def _on_child(self, event_type: str, body: Obj, __: Obj | None) -> None:
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        cluster = labels.get(LABEL_CLUSTER)
        if not cluster:
            return
        key = (str(meta["namespace"]), str(cluster))
        if body.get("kind") == "Deployment" and LABEL_WORKER_GROUP in labels:
            # Every group Deployment a cluster has, whatever its status says: one taken out of
            # the spec is found even if no status ever listed it.
            names = self.group_deployments.setdefault(key, set())
            if event_type == "DELETED":
                names.discard(meta["name"])
            else:
                names.add(meta["name"])
        if self.rays.get(*key) is not None and not self._held(key):
            self.queue.add(key)

    def _on_pod(self, event_type: str, body: Obj, __: Obj | None) -> None:
        key = self.autoscaling.on_pod(event_type, body)
        if key is not None and self.rays.get(*key) is not None and not self._held(key):
            self.queue.add(key)

    def resync(self) -> None:
        """Reconcile every known cluster (the periodic safety net)."""
        for ray in self.rays.items():
            self.queue.add((ray["metadata"]["namespace"], ray["metadata"]["name"]))

    async def close(self) -> None:
        """Post the events still pending."""
        await self.events.drain()

    # --- burst bookkeeping ------------------------------------------------------------------
    def _children_written(self, key: Key) -> None:
        """``key`` no longer waits for its children: once none does, let status and events go."""
        if key not in self.creating:
            return
        self.creating.discard(key)
        if not self.creating:
            self.events.release()
            held, self.held_status = list(self.held_status), {}
            for waiting in held:
                self.queue.add(waiting)

    def _held(self, key: Key) -> bool:
        """Whether ``key``'s status write or child-triggered reconcile waits for the burst."""
        if not self.creating or key in self.creating:
            return False
        since = self.held_status.get(key)
        if since is None:
            self.held_status[key] = time.monotonic()
            # Released when the burst ends, or by this at the latest.
            self.queue.add_after(key, self.status_hold + 0.1)
            return True
        return time.monotonic() - since < self.status_hold

    # --- reconcile --------------------------------------------------------------------------
    async def _reconcile_key(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        body = self.rays.get(key[0], key[1])
        try:
            if body is None:
                return
            if not body["metadata"].get("deletionTimestamp"):
                await self.reconcile(body)
            elif GCS_FINALIZER in (body["metadata"].get("finalizers") or []):
                generation = int(body["metadata"].get("generation", 0))
                validated, _ = await self._validated(body, key, generation)
                await self.redis.finish(body, validated.plan)
        finally:
            self._children_written(key)

    async def reconcile(self, body: Obj) -> None:
        """Bring one cluster's children to the desired state and write its status."""
        meta = body["metadata"]
        key: Key = (meta["namespace"], meta["name"])
        versions = self._versions(body, key)
        if self.settled.get(key) == versions:
            return
        self.settled.pop(key, None)
        generation = int(meta.get("generation", 0))
        validated, failure = await self._validated(body, key, generation)
        body = self.rays.get(*key) or body  # recording the defaults may have written it
        report = validated.report
        for path in report.unknown_fields:
            self.events.emit_once(
                body,
                "Warning",
                REASON_UNKNOWN_FIELD,
                f"unknown field {path} is ignored (not part of a Kubernetes pod template)",
            )
        head_desired, worker_desired = _written_replicas(body)
        plan = validated.plan
        counts: dict[str, int] = {}
        if not report.ok:
            failure = ChildFailure(REASON_INVALID_SPEC, report.message())
        elif plan is not None and failure is None:
            head_desired, worker_desired = plan.head.replicas, plan.worker.replicas
            children = validated.children
            before: dict[str, int | None] = {}
            tending: ChildFailure | None = None
            self.autoscaling.report_clamped(body, plan)
            if plan.autoscaling_idle is not None:
                self.pods.start()
                if not self.pods.synced.is_set():
                    # Its pods decide the counts: never from a cache not listed yet.
                    self.queue.add_after(key, POD_CACHE_RETRY)
                    return
                before = {g.deployment: _replicas(self.deployments.get(meta["namespace"],
                                                                       g.deployment))
                          for g in groups_of(plan)}
                counts, problem = await self.autoscaling.scale(body, plan)
                if problem is not None:
                    tending = ChildFailure(REASON_FAILED_DELETE, problem)
                children = _with_counts(children, counts)
                worker_desired = counts.get(worker_name(meta["name"]), worker_desired)
            rest = children
            for stage in _STAGES:
                first = [d for d in rest if d["kind"] in stage]
                rest = [d for d in rest if d["kind"] not in stage]
                results = await asyncio.gather(*(self._ensure(body, d) for d in first))
                failure = next((r for r in results if r), None)
                if failure is not None:
                    break
            if failure is None:
                if plan.auth:
                    secret = self.secrets.get(meta["namespace"], auth_secret_name(meta["name"]))
                    uid = str(((secret or {}).get("metadata") or {}).get("uid", ""))
                    rest = with_token_secret(rest, uid)
                # The rest do not depend on each other: written side by side.
                results = await asyncio.gather(*(self._ensure(body, d) for d in rest))
                failure = next((r for r in results if r), None)
                if failure is None and counts:
                    self.autoscaling.report_scaling(body, plan, before, counts)
            failure = await self._remove_unasked(body, children) or failure or tending
            body = await self.redis.keep_finalizer(body, plan.gcs_ft is not None)
        if failure is not None:
            self.events.emit_once(body, "Warning", failure.reason, failure.message)
        self._children_written(key)
        suspended = plan is not None and plan.suspended
        if plan is not None:
            groups = tuple(
                (g.name, counts.get(group_name(meta["name"], g.name), g.pods.replicas))
                if plan.autoscaling_idle is not None else (g.name, g.pods.replicas)
                for g in plan.groups
            )
        else:  # an invalid spec: the groups as last shown, still counted
            shown = (body.get("status") or {}).get("workerGroups") or []
            groups = tuple((str(g.get("name")), int(g.get("desired") or 0)) for g in shown)
        if plan is not None:
            scaling = self._scaling_status(body, plan, counts)
        else:  # an invalid edit: what the autoscaler reads stays until the spec is valid again
            scaling = _kept_scaling_status(body)
        in_sync = await self._write_status(
            body, key, generation, head_desired, worker_desired, failure, suspended, groups,
            scaling,
        )
        if in_sync and failure is None and self._versions(body, key) == versions:
            self.settled[key] = versions
        if failure is not None and failure.reason != REASON_INVALID_SPEC:
            # Reported above; retried with backoff (a conflicting object may go away, a
            # missing right may be granted). An invalid spec waits for the user's next edit.
            raise Backoff(failure.message)

    async def _validated(
        self, body: Obj, key: Key, generation: int
    ) -> tuple[Validated, ChildFailure | None]:
        """The spec checked and, when valid, its children built from the recorded defaults."""
        uid = str(body["metadata"].get("uid", ""))
        cached = self.plans.get(key)
        same_spec = cached is not None and cached[:2] == (uid, generation)
        report = cached[3].report if cached is not None and same_spec else None
        if report is None:
            report = validate_ray(body, self.fields, in_cluster=True)
        if not report.ok or report.resource is None:
            validated = Validated(report, None, [])
            self.plans[key] = (uid, generation, "", validated)
            return validated, None
        try:
            defaults = await self._recorded_defaults(body, report.resource)
        except DefaultsError as exc:
            return Validated(report, None, []), ChildFailure(REASON_INVALID_DEFAULTS, str(exc))
        recorded = defaults.annotation()
        if cached is not None and same_spec and cached[2] == recorded:
            return cached[3], None
        plan = plan_cluster(
            report.resource,
            defaults,
            report.unknown_fields,
            self.settings.operator_namespace,
        )
        children = _carrying_record(build_children(plan, provider_code()),
                                    head_name(plan.name), recorded)
        validated = Validated(report, plan, children)
        self.plans[key] = (uid, generation, recorded, validated)
        return validated, None

    async def _recorded_defaults(self, body: Obj, resource: RayResource) -> Defaults:
        """The defaults this cluster was given, recorded on it if they are not yet.

        A new cluster's record goes on its head Deployment as it is created (no request of its
        own), and on the ``Ray`` at a later reconcile, once it exists: in a burst of new Rays
        that reconcile waits with the status writes, so the creates go first. An operator
        restarted in between finds the record on the head Deployment.
        """
        needed = roles_using_defaults(resource)
        recorded = read_defaults(body)
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        own = self._own_deployments(body, ns, name)
        if recorded is None:
            carried = None if asks_for_current(body) else _carried_defaults(own)
            if carried is not None:
                recorded = carried
            elif own and not asks_for_current(body):
                # Made by the first release, which did not record its defaults: the running
                # children say which image it chose. Record that, never today's default.
                recorded = legacy_defaults(_images(own), self.settings.ray_image)
            else:
                recorded = self._current(needed)
        missing = [role for role in needed if recorded.template(role) is None]
        if missing:
            fresh = self._current(missing)
            recorded = recorded.with_templates({r: fresh.templates[r] for r in missing})
        text = recorded.annotation()
        annotations = body["metadata"].get("annotations") or {}
        if own and annotations.get(ANNOTATION_DEFAULTS) != text:
            meta = body["metadata"]
            patch = {"metadata": {"annotations": {ANNOTATION_DEFAULTS: text}}}
            self.rays.remember(await self.kube.patch(RAY, meta["name"], patch, meta["namespace"]))
        return recorded

    def _versions(self, body: Obj, key: Key) -> tuple[str, ...]:
        ns, name = key
        ray = self.rays.get(ns, name) or body
        children = (
            self.deployments.get(ns, head_name(name)),
            self.deployments.get(ns, worker_name(name)),
            self.services.get(ns, head_name(name)),
            self.secrets.get(ns, auth_secret_name(name)),
            self.network_policies.get(ns, network_policy_name(name)),
            *(self.deployments.get(ns, group_name(name, g)) for g in _group_names(ray)),
            self.deployments.get(ns, autoscaler_name(name)),
            self.configmaps.get(ns, autoscaler_name(name)),
            self.service_accounts.get(ns, autoscaler_name(name)),
            self.roles.get(ns, autoscaler_name(name)),
            self.role_bindings.get(ns, autoscaler_name(name)),
        )
        return tuple(
            str((obj or {}).get("metadata", {}).get("resourceVersion", ""))
            for obj in (ray, *children)
        ) + self.autoscaling.versions(key)

    def _current(self, roles: list[str]) -> Defaults:
        full = current_defaults(self.settings.ray_image, self.settings.default_templates)
        return Defaults(full.revision, {r: full.templates[r] for r in roles})

    def _own_deployments(self, body: Obj, ns: str, name: str) -> dict[str, Obj]:
        uid = body["metadata"].get("uid")
        found = {}
        for role, child in ((ROLE_HEAD, head_name(name)), (ROLE_WORKER, worker_name(name))):
            deployment = self.deployments.get(ns, child)
            if deployment is not None and controller_uid(deployment) == uid:
                found[role] = deployment
        return found

    async def _write_status(
        self,
        body: Obj,
        key: Key,
        generation: int,
        head_desired: int,
        worker_desired: int,
        failure: ChildFailure | None,
        suspended: bool = False,
        groups: tuple[tuple[str, int], ...] = (),
        scaling: Observed | None = None,
    ) -> bool:
        """Write the status if it changed; True when what is written is already true.

        ``scaling``: what an autoscaled cluster adds (floors, autoscaler, what it reads).
        """
        ns, name = key
        observed = Observed(
            generation=generation,
            head_desired=head_desired,
            worker_desired=worker_desired,
            head=self.deployments.get(ns, head_name(name)),
            worker=self.deployments.get(ns, worker_name(name)),
            worker_selector=worker_selector(name),
            error=failure.message if failure else None,
            error_reason=failure.reason if failure else REASON_INVALID_SPEC,
            suspended=suspended,
            groups=tuple(
                (g, desired, self.deployments.get(ns, group_name(name, g))) for g, desired in groups
            ),
            floors=scaling.floors if scaling else None,
            autoscaler=scaling.autoscaler if scaling else None,
            autoscaling=scaling.autoscaling if scaling else None,
            infeasible=scaling.infeasible if scaling else None,
        )
        previous = body.get("status") or {}
        now = now_rfc3339()
        status = compute_status(previous, observed, now)
        if not status_changed(previous, status):
            return True
        if self._held(key):
            return False
        self.held_status.pop(key, None)
        # While replica counts climb, write at most once per interval per cluster; the
        # deferred reconcile writes whatever is true by then (a burst costs one write).
        wait = self.last_status_write.get(key, -1e9) + self.status_interval - time.monotonic()
        if wait > 0:
            self.queue.add_after(key, wait)
            return False
        self.last_status_write[key] = time.monotonic()
        status["lastReconcileTime"] = now
        try:
            updated = await self.kube.patch(RAY, name, {"status": status}, ns, subresource="status")
        except KubeError as exc:
            if not exc.not_found:
                raise
            return False
        self.rays.remember(updated)
        return False

    def _scaling_status(
        self, body: Obj, plan: ClusterPlan, counts: dict[str, int]
    ) -> Observed | None:
        """What an autoscaled cluster shows beyond the others (None: not autoscaled)."""
        if plan.autoscaling_idle is None:
            return None
        floors = {
            ("" if g.deployment == worker_name(plan.name) else g.node_type.removeprefix(
                "worker-")): g.pods.minimum
            for g in groups_of(plan)
        }
        return Observed(
            generation=None, head_desired=0, worker_desired=0, head=None, worker=None,
            floors=floors,
            autoscaler=self.deployments.get(plan.namespace, autoscaler_name(plan.name)),
            autoscaling=self.autoscaling.status(plan, counts),
            infeasible=self.autoscaling.report_infeasible(body),
        )

    def _cache(self, kind: str) -> Informer:
        return {
            "Deployment": self.deployments,
            "Service": self.services,
            "Secret": self.secrets,
            "NetworkPolicy": self.network_policies,
            "ConfigMap": self.configmaps,
            "ServiceAccount": self.service_accounts,
            "Role": self.roles,
            "RoleBinding": self.role_bindings,
        }[kind]

    async def _remove_unasked(self, owner: Obj, desired: list[Obj]) -> ChildFailure | None:
        """Delete children the spec no longer asks for (auth, network policy, a worker group)."""
        meta = owner["metadata"]
        wanted = {(d["kind"], d["metadata"]["name"]) for d in desired}
        unasked = [(kind, name_of(meta["name"])) for kind, name_of in _OPTIONAL]
        # Group Deployments the spec no longer has go, pods and all.
        groups = self.group_deployments.get((meta["namespace"], meta["name"]), set())
        unasked += [("Deployment", name) for name in sorted(groups)]
        for kind, name in unasked:
            existing = self._cache(kind).get(meta["namespace"], name)
            if existing is None or (kind, name) in wanted:
                continue
            if controller_uid(existing) != meta.get("uid"):
                continue  # not ours: never touched
            uid = existing["metadata"].get("uid")
            try:
                deleted = await self.kube.delete(_KINDS[kind], name, meta["namespace"], uid=uid)
            except KubeError as exc:
                if exc.conflict:
                    continue  # another object of that name now: not the one we made
                return ChildFailure(
                    REASON_FAILED_DELETE, f"Failed to delete the {kind.lower()} {name}: {exc}"
                )
            if deleted:
                self._cache(kind).forget(existing)
                message = f"Deleted the {kind.lower()} {name}: the spec no longer asks for it"
                self.events.emit(owner, "Normal", REASON_DELETED, message)
        return None

    async def _ensure(self, owner: Obj, desired: Obj) -> ChildFailure | None:
        """Create or repair one child; what went wrong, if anything."""
        kind = _KINDS[desired["kind"]]
        cache = self._cache(desired["kind"])
        meta = desired["metadata"]
        noun = f"{desired['kind'].lower()} {meta['name']}"
        existing = cache.get(meta["namespace"], meta["name"])
        if existing is None:
            body = desired
            if desired["kind"] == "Secret":
                body = {**desired, "stringData": {AUTH_TOKEN_KEY: secrets.token_urlsafe(32)}}
            try:
                created = await self.kube.create(kind, body)
            except KubeError as exc:
                if not exc.conflict:
                    return ChildFailure(
                        REASON_FAILED_CREATE, f"Failed to create the {noun}: {exc.message}"
                    )
                # It exists but is not in our cache: someone else's, or ours without our labels.
                existing = await self.kube.get(
                    kind, meta["name"], meta["namespace"], metadata_only=desired["kind"] == "Secret"
                )
            else:
                if desired["kind"] == "Secret":
                    created = {k: v for k, v in created.items() if k not in ("data", "stringData")}
                cache.remember(created)
                self.events.emit(owner, "Normal", REASON_CREATED, f"Successfully create the {noun}")
                return None
        if controller_uid(existing) != owner["metadata"].get("uid"):
            return ChildFailure(
                REASON_CHILD_CONFLICT,
                f"{desired['kind']} {meta['namespace']}/{meta['name']} already exists and is "
                f"controlled by {controller_name(existing)}, not by this Ray: it is left as it "
                f"is; delete or rename it, or give the Ray another name",
            )
        if desired["kind"] == "Secret":
            return None  # the token is written once, at creation, and never read back
        drift = differences(_compared(desired), existing) + setting_leftovers(desired, existing)
        if not drift:
            return None
        try:
            updated = await self.kube.replace(kind, replacement(existing, desired))
        except KubeError as exc:
            if exc.not_found:
                return None  # deleted meanwhile: its DELETED event brings a re-create
            if exc.conflict:
                raise  # changed meanwhile: retried with the newer version
            return ChildFailure(REASON_FAILED_UPDATE, f"Failed to update the {noun}: {exc.message}")
        cache.remember(updated)
        if drift == ["spec.replicas"] and _autoscaled(desired):
            return None  # ScaledUp / ScaledDown say it, with the reason
        shown = ", ".join(drift[:3]) + (f" and {len(drift) - 3} more" if len(drift) > 3 else "")
        self.events.emit(
            owner, "Normal", REASON_UPDATED, f"Successfully update the {noun} ({shown})"
        )
        return None


def _kept_scaling_status(ray: Obj) -> Observed | None:
    """The autoscaler's view as last written, for a Ray whose spec cannot be planned now.

    Dropped, it would tell the autoscaler every pod is gone: it would launch for them and
    forget the pods it named for removal.
    """
    shown = (ray.get("status") or {}).get("autoscaling")
    if not shown or not _asks_for_autoscaling(ray):
        return None
    return Observed(generation=None, head_desired=0, worker_desired=0, head=None, worker=None,
                    autoscaling=shown)


def _asks_for_autoscaling(ray: Obj) -> bool:
    """The Ray's spec turns autoscaling on (valid or not)."""
    autoscaling = (ray.get("spec") or {}).get("autoscaling")
    return isinstance(autoscaling, dict) and autoscaling.get("enabled") is True


def _compared(desired: Obj) -> Obj:
    """What of a child is compared with what exists.

    The autoscaler's code is written with its config, never alone: an operator upgrade that
    ships new code leaves running clusters as they are. A Deployment's defaults record is not
    compared either (see ``_carrying_record``).
    """
    if desired["kind"] == "Deployment":
        meta = desired["metadata"]
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                       if k != ANNOTATION_DEFAULTS}
        return {**desired, "metadata": {**meta, "annotations": annotations}}
    if desired["kind"] != "ConfigMap":
        return desired
    return {**desired, "data": {CONFIG_KEY: desired["data"][CONFIG_KEY]}}


def _carrying_record(children: list[Obj], head: str, record: str) -> list[Obj]:
    """The children, the head Deployment created with the cluster's defaults record.

    Written at creation and on a repair, never compared (``_compared``): the children of
    clusters made before they carried it are not rewritten by an upgrade. The head's only: a
    cluster always has one, and the record is a few kB in every cache that holds it.
    """
    found = []
    for child in children:
        if child["kind"] == "Deployment" and child["metadata"]["name"] == head:
            meta = child["metadata"]
            annotations = {**(meta.get("annotations") or {}), ANNOTATION_DEFAULTS: record}
            child = {**child, "metadata": {**meta, "annotations": annotations}}
        found.append(child)
    return found


def _carried_defaults(own: dict[str, Obj]) -> Defaults | None:
    """The defaults record a cluster's Deployments carry (None: none readable)."""
    for deployment in own.values():
        try:
            found = read_defaults(deployment)
        except DefaultsError:
            continue  # not ours to judge: the Ray's own record is what users edit
        if found is not None:
            return found
    return None


def _with_counts(children: list[Obj], counts: dict[str, int]) -> list[Obj]:
    """The Deployments of autoscaled groups at the counts they may take now (copies)."""
    found = []
    for child in children:
        name = child["metadata"]["name"]
        if child["kind"] == "Deployment" and name in counts:
            child = {**child, "spec": {**child["spec"], "replicas": counts[name]}}
        found.append(child)
    return found


def _autoscaled(desired: Obj) -> bool:
    """A Deployment whose pods Ray's autoscaler counts."""
    labels = ((desired.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels")
    return LABEL_AUTOSCALING in (labels or {})


def _replicas(deployment: Obj | None) -> int | None:
    return None if deployment is None else int(deployment["spec"].get("replicas", 0))


def _group_names(ray: Obj) -> list[str]:
    """The names of ``spec.workerGroups`` as written (valid or not)."""
    groups = (ray.get("spec") or {}).get("workerGroups") or []
    return [str(g.get("name")) for g in groups if isinstance(g, dict)]


def _images(deployments: dict[str, Obj]) -> dict[str, str]:
    """The Ray image each role's Deployment runs (its Ray container, else its first one)."""
    images = {}
    for role, deployment in deployments.items():
        containers = deployment["spec"]["template"]["spec"].get("containers") or []
        wanted = HEAD_CONTAINER if role == ROLE_HEAD else WORKER_CONTAINER
        chosen = next((c for c in containers if c.get("name") == wanted), None)
        chosen = chosen or (containers[0] if containers else {})
        if chosen.get("image"):
            images[role] = str(chosen["image"])
    return images


def _written_replicas(body: Obj) -> tuple[int, int]:
    """Head and worker counts as written, for the status of a spec that failed validation."""
    spec = body.get("spec") or {}

    def count(role: str, default: int) -> int:
        value = (spec.get(role) or {}).get("replicas")
        return value if isinstance(value, int) else default

    return count("head", 1), count("worker", 0)
