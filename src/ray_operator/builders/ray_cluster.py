"""A ``Ray`` resource -> its Deployments, head Service, and optional token Secret and policy."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from typing import Any, Final

from ray_operator.api.constants import (
    API_VERSION,
    ENV_HEAD_SERVICE,
    ENV_NODE_IP,
    LABEL_AUTOSCALING,
    LABEL_CLUSTER,
    LABEL_MANAGED_BY,
    LABEL_RAYJOB,
    LABEL_ROLE,
    LABEL_WORKER_GROUP,
    MANAGED_BY,
    PORT_DASHBOARD,
    ROLE_AUTOSCALER,
    ROLE_HEAD,
    ROLE_WORKER,
)
from ray_operator.api.node_shape import RAY_HEAD_CONTAINER as HEAD_CONTAINER
from ray_operator.api.node_shape import RAY_WORKER_CONTAINER, ray_start_container
from ray_operator.api.pod_fields import without_fields
from ray_operator.api.quantity import quantity
from ray_operator.api.ray import (
    DEFAULT_IDLE_TIMEOUT_SECONDS,
    GcsFaultTolerance,
    RayNetworkPolicy,
    RayResource,
    ReplicaSpec,
    WorkerGroup,
)
from ray_operator.builders.autoscaling import (
    AUTOSCALING_ENV_NAMES,
    SCHEDULING_GATE,
    ScaledGroup,
    autoscaled_template,
    autoscaler_name,
    autoscaler_pod_template,
    autoscaling_config,
    autoscaling_env,
    build_autoscaler_configmap,
    build_autoscaler_rbac,
    carries_gate,
    gated_worker_template,
)
from ray_operator.builders.defaults import (
    GATE_AUTOSCALED_WORKERS_FROM,
    WAIT_FOR_GCS_FROM,
    Defaults,
)
from ray_operator.builders.gcs_wait import WAIT_CONTAINER, with_gcs_wait

Obj = dict[str, Any]

# Ray's token authentication (Ray 2.52 and later), and the key of the operator's token Secret
# (the key RayJob.spec.tokenSecretName reads as well).
ENV_AUTH_MODE: Final = "RAY_AUTH_MODE"
ENV_AUTH_TOKEN: Final = "RAY_AUTH_TOKEN"
AUTH_TOKEN_KEY: Final = "token"
# GCS fault tolerance: where the head keeps its state, and how long workers wait for a new head
# (Ray's default is 60 s; a head pod rescheduled and pulling its image takes longer).
ENV_REDIS_ADDRESS: Final = "RAY_REDIS_ADDRESS"
ENV_REDIS_PASSWORD: Final = "REDIS_PASSWORD"
ENV_STORAGE_NAMESPACE: Final = "RAY_external_storage_namespace"
ENV_GCS_RECONNECT: Final = "RAY_gcs_rpc_server_reconnect_timeout_s"
GCS_RECONNECT_SECONDS: Final = 600
# The chart's pod label of the operator (app.kubernetes.io/name: the chart's name).
OPERATOR_POD_LABELS: Final = {"app.kubernetes.io/name": "ray-operator"}


@dataclass(frozen=True)
class RoleSpec:
    """Desired pods of one role, defaults applied and unknown fields dropped.

    ``replicas`` is the count to run: the spec's, kept within ``[minimum, maximum]``.
    """

    replicas: int
    template: Obj
    minimum: int = 0
    maximum: int | None = None
    requested: int | None = None  # the spec's count when it lies outside the bounds
    to_delete: tuple[str, ...] = ()  # scaleStrategy.workersToDelete


@dataclass(frozen=True)
class GroupPlan:
    """One of ``spec.workerGroups``: its name and pods."""

    name: str
    pods: RoleSpec


@dataclass(frozen=True)
class ClusterPlan:
    """Everything the builders need to know about one ``Ray`` resource."""

    name: str
    namespace: str
    uid: str
    head: RoleSpec
    worker: RoleSpec
    revision: int  # the builder revision recorded on the Ray (builders.defaults)
    suspended: bool = False  # spec.suspend: both Deployments at 0, whatever replicas say
    auth: bool = False  # spec.auth.mode token
    network_policy: RayNetworkPolicy | None = None  # when enabled
    gcs_ft: GcsFaultTolerance | None = None
    # Where the operator runs (admitted to the job API to stop jobs); None: not in a cluster.
    operator_namespace: str | None = None
    groups: tuple[GroupPlan, ...] = ()
    # spec.autoscaling: seconds an idle worker stays; None: not autoscaled.
    autoscaling_idle: int | None = None


def head_name(cluster: str) -> str:
    """Name of the head Deployment and of the head Service."""
    return f"{cluster}-head"


def auth_secret_name(cluster: str) -> str:
    """The Secret holding the cluster's Ray auth token (``spec.auth``)."""
    return f"{cluster}-auth"


def network_policy_name(cluster: str) -> str:
    """The NetworkPolicy of a cluster (``spec.networkPolicy``)."""
    return f"{cluster}-ray"


def group_name(cluster: str, group: str) -> str:
    """Name of a worker group's Deployment."""
    return f"{cluster}-worker-{group}"


def group_role(group: str) -> str:
    """The role label of a group's pods: not "worker", which spec.worker's Deployment selects."""
    return f"worker-{group}"


def worker_name(cluster: str) -> str:
    """Name of the worker Deployment."""
    return f"{cluster}-worker"


def selector_labels(cluster: str, role: str) -> dict[str, str]:
    """Labels that select the pods of one role of one cluster."""
    return {LABEL_CLUSTER: cluster, LABEL_ROLE: role}


def worker_selector(cluster: str) -> str:
    """The worker pods' label selector as a string (for the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(cluster, ROLE_WORKER).items())


def roles_using_defaults(resource: RayResource) -> list[str]:
    """The roles whose pods come from a default template (the spec gives none)."""
    spec = resource.spec
    return [
        role
        for role, replica in ((ROLE_HEAD, spec.head), (ROLE_WORKER, spec.worker))
        if replica is None or replica.template is None
    ]


def plan_cluster(
    resource: RayResource,
    defaults: Defaults,
    unknown_fields: list[str] | None = None,
    operator_namespace: str | None = None,
) -> ClusterPlan:
    """Apply defaults: one head, and the recorded default template of each role without one."""
    meta = resource.metadata
    spec = resource.spec
    drop = unknown_fields or []
    autoscaled = spec.autoscaling is not None and spec.autoscaling.enabled
    head = _role(spec.head, 1, defaults, ROLE_HEAD, drop)
    worker = _bounded(spec.worker, _role(spec.worker, 1, defaults, ROLE_WORKER, drop), autoscaled)
    if autoscaled:  # Ray's autoscaler reads a node's GPUs and memory from its flags
        worker = replace(worker, template=with_ray_resources(worker.template, {}))
    suspended = bool(spec.suspend)
    groups = tuple(
        GroupPlan(g.name, _bounded(g, _group_pods(g, defaults, drop, index), autoscaled))
        for index, g in enumerate(spec.workerGroups or [])
    )
    if suspended:
        # The templates stay as they are: resuming brings back the very same pods.
        head, worker = replace(head, replicas=0), replace(worker, replicas=0)
        groups = tuple(GroupPlan(g.name, replace(g.pods, replicas=0)) for g in groups)
    idle = None
    if autoscaled and spec.autoscaling is not None:
        idle = spec.autoscaling.idleTimeoutSeconds
        idle = DEFAULT_IDLE_TIMEOUT_SECONDS if idle is None else idle
    return ClusterPlan(
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", ""),
        head=head,
        worker=worker,
        revision=defaults.revision,
        suspended=suspended,
        auth=spec.auth is not None,
        network_policy=spec.networkPolicy if spec.networkPolicy and spec.networkPolicy.enabled
        else None,
        operator_namespace=operator_namespace,
        groups=groups,
        gcs_ft=spec.gcsFaultTolerance,
        autoscaling_idle=idle,
    )


def _bounded(given: ReplicaSpec | WorkerGroup, pods: RoleSpec, autoscaled: bool) -> RoleSpec:
    """A worker group's count kept within its bounds (autoscaled, it starts at its minimum)."""
    low = given.minReplicas or 0
    high = given.maxReplicas
    asked = given.replicas
    if asked is None and autoscaled:
        asked = low
    asked = pods.replicas if asked is None else asked
    count = max(asked, low)
    count = count if high is None else min(count, high)
    to_delete = tuple(given.scaleStrategy.workersToDelete) if given.scaleStrategy else ()
    return RoleSpec(count, pods.template, low, high, asked if asked != count else None,
                    to_delete)


def _group_pods(group: WorkerGroup, defaults: Defaults, drop: list[str], index: int) -> RoleSpec:
    """A group's pods: its template (or the default worker's), told the node's Ray resources."""
    replicas = 1 if group.replicas is None else group.replicas
    if group.template is None:
        template = _default_template(defaults, ROLE_WORKER)
    else:
        path = f"spec.workerGroups[{index}].template"
        template = group.template.model_dump(exclude_none=True, by_alias=True)
        mine = [p for p in drop if p.startswith(path + ".")]
        template = without_fields(template, mine, path) if mine else template
    return RoleSpec(replicas, with_ray_resources(template, group.rayResources or {}))


def with_ray_resources(template: Obj, custom: dict[str, float]) -> Obj:
    """A group's pods told their node's shape in ``ray start`` flags.

    ``--num-gpus`` and ``--memory`` from the Ray container's limits, ``--resources`` from
    ``custom``: Ray, and an autoscaler, know a node's resources from its flags, not its pod.
    """
    template = copy.deepcopy(template)
    container = ray_start_container(template)
    if container is None:
        return template  # validation refuses rayResources here; nothing to add to
    limits = (container.get("resources") or {}).get("limits") or {}
    flags = []
    gpus = int(quantity(limits.get("nvidia.com/gpu")) or 0)  # whole devices only
    if gpus > 0:
        flags.append(f"--num-gpus={gpus}")
    memory = int(quantity(limits.get("memory")) or 0)
    if memory > 0:
        flags.append(f"--memory={memory}")
    if custom:
        flags.append("--resources=" + json.dumps(custom, sort_keys=True, separators=(",", ":")))
    _add_start_flags(container, flags)
    return template


def _add_start_flags(container: Obj, flags: list[str]) -> None:
    """``ray start`` flags before ``--block``; a flag the user wrote already wins."""
    args = list(container["args"])
    given = {a.split("=", 1)[0] for a in args}
    extra = [f for f in flags if f.split("=", 1)[0] not in given]
    at = args.index("--block") if "--block" in args else len(args)
    container["args"] = [*args[:at], *extra, *args[at:]]


def _default_template(defaults: Defaults, role: str) -> Obj:
    template = defaults.template(role)
    if template is None:
        raise ValueError(f"no default {role} template recorded (revision {defaults.revision})")
    return template


def _role(
    replica: ReplicaSpec | None,
    default_replicas: int,
    defaults: Defaults,
    role: str,
    drop: list[str],
) -> RoleSpec:
    path = f"spec.{role}.template"
    if replica is None:
        return RoleSpec(default_replicas, _default_template(defaults, role))
    replicas = default_replicas if replica.replicas is None else replica.replicas
    if replica.template is None:
        return RoleSpec(replicas, _default_template(defaults, role))
    template = replica.template.model_dump(exclude_none=True, by_alias=True)
    mine = [p for p in drop if p.startswith(path + ".")]
    return RoleSpec(replicas, without_fields(template, mine, path) if mine else template)


def owner_reference(plan: ClusterPlan) -> Obj:
    """The controller reference that lets the garbage collector delete the children."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Ray",
        "name": plan.name,
        "uid": plan.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(plan: ClusterPlan, role: str) -> dict[str, str]:
    return {**selector_labels(plan.name, role), LABEL_MANAGED_BY: MANAGED_BY}


def _inject_env(template: Obj, extra: list[Obj]) -> Obj:
    """Put the operator's variables first in every container (user values of them are replaced)."""
    template = copy.deepcopy(template)
    names = {e["name"] for e in extra}
    for container in template.get("spec", {}).get("containers", []):
        own = [e for e in container.get("env", []) if e.get("name") not in names]
        container["env"] = [*copy.deepcopy(extra), *own]
    return template


def _auth_env(plan: ClusterPlan) -> list[Obj]:
    secret = {"name": auth_secret_name(plan.name), "key": AUTH_TOKEN_KEY}
    return [
        {"name": ENV_AUTH_MODE, "value": "token"},
        {"name": ENV_AUTH_TOKEN, "valueFrom": {"secretKeyRef": secret}},
    ]


def _gcs_ft_env(plan: ClusterPlan, role: str) -> list[Obj]:
    """The head's Redis settings; the workers' patience while a new head starts."""
    if role != ROLE_HEAD:
        return [{"name": ENV_GCS_RECONNECT, "value": str(GCS_RECONNECT_SECONDS)}]
    return gcs_ft_head_env(plan)


def gcs_ft_head_env(plan: ClusterPlan) -> list[Obj]:
    """Where the head keeps the GCS: the Redis address, password and storage namespace."""
    ft = plan.gcs_ft
    assert ft is not None
    env: list[Obj] = [
        {"name": ENV_REDIS_ADDRESS, "value": ft.redisAddress},
        {"name": ENV_STORAGE_NAMESPACE, "value": ft.externalStorageNamespace or plan.uid},
    ]
    if ft.redisPasswordSecret is not None:
        ref = ft.redisPasswordSecret
        env.append(
            {
                "name": ENV_REDIS_PASSWORD,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    return env


def _with_redis_password(template: Obj) -> Obj:
    """``ray start`` takes the Redis password as a flag only: from the variable, unless given."""
    template = copy.deepcopy(template)
    container = ray_start_container(template, HEAD_CONTAINER)
    if container is not None:
        _add_start_flags(container, [f"--redis-password=$({ENV_REDIS_PASSWORD})"])
    return template


def _ray_containers(pod: Obj) -> list[Obj]:
    """The Ray container (its default name, else the first) and the operator's GCS wait.

    A token or a password goes to them, not to a user's sidecars.
    """
    containers = pod.get("containers", [])
    ray = [c for c in containers if c.get("name") in (HEAD_CONTAINER, RAY_WORKER_CONTAINER)]
    waits = [c for c in pod.get("initContainers", []) if c.get("name") == WAIT_CONTAINER]
    return [*waits, *(ray or containers[:1])]


def _with_env(template: Obj, env: list[Obj]) -> Obj:
    """Settings in the Ray containers, the GCS wait too (``ray health-check`` reads them)."""
    template = copy.deepcopy(template)
    names = {e["name"] for e in env}
    pod = template.get("spec", {})
    for container in _ray_containers(pod):
        own = [e for e in container.get("env", []) if e.get("name") not in names]
        container["env"] = [*own, *copy.deepcopy(env)]
    return template


# What spec.auth, spec.gcsFaultTolerance and spec.autoscaling put in the pods, and take out
# again.
_OPTIONAL_ENV: Final = frozenset(
    {
        ENV_AUTH_MODE,
        ENV_AUTH_TOKEN,
        ENV_REDIS_ADDRESS,
        ENV_REDIS_PASSWORD,
        ENV_STORAGE_NAMESPACE,
        ENV_GCS_RECONNECT,
        *AUTOSCALING_ENV_NAMES,
    }
)


def _optional_env_names(template: Obj) -> set[tuple[str, str]]:
    pod = template.get("spec") or {}
    return {
        (container.get("name", ""), str(e.get("name")))
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]
        for e in container.get("env") or []
        if e.get("name") in _OPTIONAL_ENV
    }


def setting_leftovers(desired: Obj, existing: Obj) -> list[str]:
    """What ``spec.auth``, ``spec.gcsFaultTolerance`` or ``spec.autoscaling`` left when removed.

    The drift compare keeps list items others added, so it would keep ours too: pods would go
    on asking for a Secret that is gone, or a Redis nobody wants.
    """
    if desired.get("kind") != "Deployment":
        return []
    template = ("spec", "template")
    want, have = desired, existing
    for key in template:
        want, have = want.get(key) or {}, have.get(key) or {}
    stale = _optional_env_names(have) - _optional_env_names(want)
    found = [f"spec.template.spec.containers[{c}].env[{name}]" for c, name in sorted(stale)]
    # The autoscaled pods' label: the operator would go on watching pods nobody scales.
    labels = (have.get("metadata") or {}).get("labels") or {}
    if LABEL_AUTOSCALING in labels and LABEL_AUTOSCALING not in (
        (want.get("metadata") or {}).get("labels") or {}
    ):
        found.append(f"spec.template.metadata.labels[{LABEL_AUTOSCALING}]")
    # The autoscaled workers' gate: with autoscaling off, nobody would lift it.
    if carries_gate(have.get("spec") or {}) and not carries_gate(want.get("spec") or {}):
        found.append(f"spec.template.spec.schedulingGates[{SCHEDULING_GATE}]")
    return found


def _pod_template(plan: ClusterPlan, role: str, role_spec: RoleSpec, env: list[Obj]) -> Obj:
    template = _inject_env(role_spec.template, env)
    if plan.auth:
        template = _with_env(template, _auth_env(plan))
    if plan.gcs_ft is not None:
        template = _with_env(template, _gcs_ft_env(plan, role))
        if role == ROLE_HEAD and plan.gcs_ft.redisPasswordSecret is not None:
            template = _with_redis_password(template)
    if plan.autoscaling_idle is not None:
        # The role label is the group's Ray node type: head, worker, worker-<group>.
        template = _with_env(template, autoscaling_env(role))
        template = autoscaled_template(template)
        if role == ROLE_HEAD:
            container = ray_start_container(template, HEAD_CONTAINER)
            if container is not None:
                _add_start_flags(container, ["--no-monitor"])
        elif plan.revision >= GATE_AUTOSCALED_WORKERS_FROM:
            template = gated_worker_template(template)
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**metadata.get("labels", {}), **_labels(plan, role)}
    return template


def _node_ip_env() -> Obj:
    return {"name": ENV_NODE_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def _deployment(
    plan: ClusterPlan, role: str, role_spec: RoleSpec, name: str, env: list[Obj]
) -> Obj:
    # One head at a time: the old head must be gone before a new one starts (Recreate);
    # workers roll.
    strategy = {"type": "Recreate"} if role == ROLE_HEAD else {"type": "RollingUpdate"}
    body: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": plan.namespace,
            "labels": _labels(plan, role),
            "ownerReferences": [owner_reference(plan)],
        },
        "spec": {
            "replicas": role_spec.replicas,
            "selector": {"matchLabels": selector_labels(plan.name, role)},
            "strategy": strategy,
            "template": _pod_template(plan, role, role_spec, env),
        },
    }
    return body


def build_head_deployment(plan: ClusterPlan) -> Obj:
    """The head Deployment ``{name}-head``; its pods get ``RAY_NODE_IP``."""
    return _deployment(plan, ROLE_HEAD, plan.head, head_name(plan.name), [_node_ip_env()])


def _joining(plan: ClusterPlan, pods: RoleSpec) -> tuple[RoleSpec, list[Obj]]:
    """Worker pods as they join the head: its Service's name, and (revision 3 on) a wait."""
    env = [_node_ip_env(), {"name": ENV_HEAD_SERVICE, "value": head_name(plan.name)}]
    if plan.revision >= WAIT_FOR_GCS_FROM:
        exposed = {p["port"] for p in service_ports(plan.head.template)}
        dashboard = PORT_DASHBOARD if PORT_DASHBOARD in exposed else None
        waiting = with_gcs_wait(pods.template, head_name(plan.name), dashboard)
        pods = RoleSpec(pods.replicas, waiting)
    return pods, env


def build_worker_deployment(plan: ClusterPlan) -> Obj:
    """The worker Deployment ``{name}-worker``; pods also get ``RAY_HEAD_SERVICE``."""
    worker, env = _joining(plan, plan.worker)
    return _deployment(plan, ROLE_WORKER, worker, worker_name(plan.name), env)


def build_group_deployment(plan: ClusterPlan, group: GroupPlan) -> Obj:
    """The Deployment ``{name}-worker-{group}`` of one of ``spec.workerGroups``."""
    pods, env = _joining(plan, group.pods)
    body = _deployment(plan, group_role(group.name), pods, group_name(plan.name, group.name), env)
    for labels in (body["metadata"]["labels"], body["spec"]["template"]["metadata"]["labels"]):
        labels[LABEL_WORKER_GROUP] = group.name
    return body


def service_ports(template: Obj) -> list[Obj]:
    """One Service port per container port of the head; unnamed ports get ``port-<n>[-udp]``."""
    ports: list[Obj] = []
    for container in template.get("spec", {}).get("containers", []):
        for port in container.get("ports", []):
            number = port["containerPort"]
            protocol = port.get("protocol", "TCP")
            suffix = "" if protocol == "TCP" else f"-{protocol.lower()}"
            ports.append(
                {
                    "name": port.get("name") or f"port-{number}{suffix}",
                    "port": number,
                    "targetPort": number,
                    "protocol": protocol,
                }
            )
    return ports


def build_head_service(plan: ClusterPlan) -> Obj:
    """The Service ``{name}-head`` exposing every port of every head container."""
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": head_name(plan.name),
            "namespace": plan.namespace,
            "labels": _labels(plan, ROLE_HEAD),
            "ownerReferences": [owner_reference(plan)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(plan.name, ROLE_HEAD),
            "ports": service_ports(plan.head.template),
        },
    }
    return body


def _optional_child_metadata(plan: ClusterPlan, name: str) -> Obj:
    """Metadata of a child only some clusters have (found by the cluster label, owned)."""
    return {
        "name": name,
        "namespace": plan.namespace,
        "labels": {LABEL_CLUSTER: plan.name, LABEL_MANAGED_BY: MANAGED_BY},
        "ownerReferences": [owner_reference(plan)],
    }


def build_auth_secret(plan: ClusterPlan) -> Obj:
    """The token Secret, without its token.

    The controller writes a random one when it creates the Secret, and never changes it.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _optional_child_metadata(plan, auth_secret_name(plan.name)),
    }


def build_network_policy(plan: ClusterPlan) -> Obj:
    """Ingress to the cluster's pods: from each other, and to the job API from a few.

    Each other on every port; the dashboard and job API from the listed peers, the namespace's
    RayJob runners and the operator.
    """
    assert plan.network_policy is not None
    own = {"podSelector": {"matchLabels": {LABEL_CLUSTER: plan.name}}}
    runners = {"podSelector": {"matchExpressions": [{"key": LABEL_RAYJOB, "operator": "Exists"}]}}
    job_api: list[Obj] = [runners]
    if plan.operator_namespace:
        job_api.append(
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": plan.operator_namespace}
                },
                "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
            }
        )
    job_api += [p.model_dump(exclude_none=True) for p in plan.network_policy.allowFrom]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _optional_child_metadata(plan, network_policy_name(plan.name)),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_CLUSTER: plan.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [own]},
                {"from": job_api, "ports": [{"protocol": "TCP", "port": PORT_DASHBOARD}]},
            ],
        },
    }


# On the pod templates of a Ray with auth: the uid of the token Secret they read. A Secret
# deleted and made again holds a new token: the pods roll to it together.
ANNOTATION_AUTH_SECRET: Final = "ray.kubeflow.org/auth-secret-uid"


def with_token_secret(children: list[Obj], secret_uid: str) -> list[Obj]:
    """The Deployments' pod templates marked with the token Secret they read (copies)."""
    marked = []
    for child in children:
        if child["kind"] == "Deployment":
            child = copy.deepcopy(child)
            meta = child["spec"]["template"].setdefault("metadata", {})
            annotations = {**meta.get("annotations", {}), ANNOTATION_AUTH_SECRET: secret_uid}
            meta["annotations"] = annotations
        marked.append(child)
    return marked


def scaled_groups(plan: ClusterPlan) -> list[ScaledGroup]:
    """The worker groups Ray's autoscaler sizes, with their templates as built."""
    worker = build_worker_deployment(plan)
    found = [ScaledGroup(ROLE_WORKER, worker_name(plan.name), plan.worker.minimum,
                         _maximum(plan.worker), worker["spec"]["template"])]
    for group in plan.groups:
        built = build_group_deployment(plan, group)
        found.append(ScaledGroup(group_role(group.name), group_name(plan.name, group.name),
                                 group.pods.minimum, _maximum(group.pods),
                                 built["spec"]["template"]))
    return found


def _maximum(pods: RoleSpec) -> int:
    return pods.maximum if pods.maximum is not None else pods.replicas


def build_autoscaler_children(plan: ClusterPlan, code: str) -> list[Obj]:
    """Ray's autoscaler: config and code, identity and rights, and its Deployment."""
    assert plan.autoscaling_idle is not None
    head = build_head_deployment(plan)["spec"]["template"]
    config = autoscaling_config(plan.name, plan.namespace, plan.autoscaling_idle, head,
                                scaled_groups(plan))
    meta = _optional_child_metadata(plan, autoscaler_name(plan.name))
    labels = _labels(plan, ROLE_AUTOSCALER)
    env = _auth_env(plan) if plan.auth else []
    template = autoscaler_pod_template(plan.name, plan.head.template, labels, env)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**meta, "labels": labels},
        "spec": {
            "replicas": 0 if plan.suspended else 1,
            "selector": {"matchLabels": selector_labels(plan.name, ROLE_AUTOSCALER)},
            # Never two autoscalers at once: the old one is gone before the new one starts.
            "strategy": {"type": "Recreate"},
            "template": template,
        },
    }
    return [
        build_autoscaler_configmap(plan.name, plan.namespace, config, code, meta),
        *build_autoscaler_rbac(plan.name, plan.namespace, meta),
        deployment,
    ]


def build_children(plan: ClusterPlan, autoscaler_code: str = "") -> list[Obj]:
    """Every child, in the order they are created (the Secret before the pods that read it).

    ``autoscaler_code``: the node provider Ray's autoscaler runs (``spec.autoscaling``).
    """
    children = [build_auth_secret(plan)] if plan.auth else []
    if plan.network_policy is not None:
        children.append(build_network_policy(plan))
    scaling = []
    if plan.autoscaling_idle is not None:
        scaling = build_autoscaler_children(plan, autoscaler_code)
    return [
        *children,
        build_head_service(plan),
        build_head_deployment(plan),
        build_worker_deployment(plan),
        *(build_group_deployment(plan, group) for group in plan.groups),
        *scaling,
    ]
