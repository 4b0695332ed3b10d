"""A ``Ray`` resource -> its head Deployment, worker Deployment and head Service."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ray_operator.api.constants import (
    API_VERSION,
    ENV_HEAD_SERVICE,
    ENV_NODE_IP,
    LABEL_CLUSTER,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    MANAGED_BY,
    PORT_DASHBOARD,
    ROLE_HEAD,
    ROLE_WORKER,
)
from ray_operator.api.pod_fields import without_fields
from ray_operator.api.ray import RayResource, ReplicaSpec
from ray_operator.builders.defaults import WAIT_FOR_GCS_FROM, Defaults
from ray_operator.builders.gcs_wait import with_gcs_wait

Obj = dict[str, Any]


@dataclass(frozen=True)
class RoleSpec:
    """Desired pods of one role, defaults applied and unknown fields dropped."""

    replicas: int
    template: Obj


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


def head_name(cluster: str) -> str:
    """Name of the head Deployment and of the head Service."""
    return f"{cluster}-head"


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
    resource: RayResource, defaults: Defaults, unknown_fields: list[str] | None = None
) -> ClusterPlan:
    """Apply defaults: one head, and the recorded default template of each role without one."""
    meta = resource.metadata
    spec = resource.spec
    drop = unknown_fields or []
    head = _role(spec.head, 1, defaults, ROLE_HEAD, drop)
    worker = _role(spec.worker, 1, defaults, ROLE_WORKER, drop)
    suspended = bool(spec.suspend)
    if suspended:
        # The templates stay as they are: resuming brings back the very same pods.
        head, worker = RoleSpec(0, head.template), RoleSpec(0, worker.template)
    return ClusterPlan(
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", ""),
        head=head,
        worker=worker,
        revision=defaults.revision,
        suspended=suspended,
    )


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


def _pod_template(plan: ClusterPlan, role: str, role_spec: RoleSpec, env: list[Obj]) -> Obj:
    template = _inject_env(role_spec.template, env)
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


def build_worker_deployment(plan: ClusterPlan) -> Obj:
    """The worker Deployment ``{name}-worker``; pods also get ``RAY_HEAD_SERVICE``."""
    env = [_node_ip_env(), {"name": ENV_HEAD_SERVICE, "value": head_name(plan.name)}]
    worker = plan.worker
    if plan.revision >= WAIT_FOR_GCS_FROM:
        exposed = {p["port"] for p in service_ports(plan.head.template)}
        dashboard = PORT_DASHBOARD if PORT_DASHBOARD in exposed else None
        worker = RoleSpec(
            worker.replicas, with_gcs_wait(worker.template, head_name(plan.name), dashboard)
        )
    return _deployment(plan, ROLE_WORKER, worker, worker_name(plan.name), env)


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


def build_children(plan: ClusterPlan) -> list[Obj]:
    """Every child, in the order they are created."""
    return [build_head_service(plan), build_head_deployment(plan), build_worker_deployment(plan)]
