"""Ray's autoscaler for a ``Ray`` with ``spec.autoscaling``: its pods' part, its config, its pod.

Ray decides, the operator acts. Ray's own autoscaler (version 2, from the cluster's own Ray
image) runs in a Deployment ``{name}-autoscaler`` beside the cluster, with an external node
provider shipped in a ConfigMap. It reads one object, its ``Ray``: the pods the operator lists
in ``status.autoscaling.nodes``; and it writes one object, its ``Ray``: a group's ``replicas``
and, to scale down, ``scaleStrategy.workersToDelete`` with the pods it drained. Its Role grants
``get`` and ``patch`` on that one ``Ray`` and nothing else.

Every Ray node of the cluster carries ``RAY_CLOUD_INSTANCE_ID`` (its pod's name) and
``RAY_NODE_TYPE_NAME`` (its group), by which the autoscaler matches Ray nodes to pods. The pods
Ray drained and named are deleted by the operator itself, exactly those, and the Deployment's
count follows (see :func:`allowed_replicas`). A new worker of an autoscaled group is created with
a scheduling gate that the operator lifts once the group's count is settled (see
:func:`gated_worker_template`).

What this module builds for a cluster is part of the builder revision (``builders.defaults``):
changing it for existing clusters would restart their autoscaler on an operator upgrade.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Final

from ray_operator.api.constants import GROUP, LABEL_AUTOSCALING, PORT_GCS, ROLE_HEAD
from ray_operator.api.node_shape import RAY_HEAD_CONTAINER, RAY_WORKER_CONTAINER, node_shape

Obj = dict[str, Any]

ENV_CLOUD_INSTANCE_ID: Final = "RAY_CLOUD_INSTANCE_ID"
ENV_NODE_TYPE_NAME: Final = "RAY_NODE_TYPE_NAME"
ENV_AUTOSCALER_V2: Final = "RAY_enable_autoscaler_v2"
# Holds a new worker of an autoscaled group unscheduled until the operator lifts it.
SCHEDULING_GATE: Final = f"{GROUP}/worker-count-settled"
# What the autoscaler pod is told (read by ray_operator.autoscaling.node_provider).
ENV_GCS_ADDRESS: Final = "RAY_OPERATOR_GCS_ADDRESS"
ENV_RAY_NAME: Final = "RAY_OPERATOR_RAY"
ENV_NAMESPACE: Final = "RAY_OPERATOR_NAMESPACE"
ENV_CONFIG: Final = "RAY_OPERATOR_AUTOSCALING_CONFIG"
ENV_POD_IP: Final = "RAY_OPERATOR_POD_IP"
# The module the autoscaler runs and the config it reads, as files of the ConfigMap.
PROVIDER_MODULE: Final = "ray_operator_autoscaler"
CODE_KEY: Final = f"{PROVIDER_MODULE}.py"
CONFIG_KEY: Final = "autoscaling.json"
MOUNT_PATH: Final = "/etc/ray-operator/autoscaler"
AUTOSCALER_CONTAINER: Final = "autoscaler"
AUTOSCALER_METRICS_PORT: Final = 44217  # Ray's autoscaler metrics port
NODE_TYPE_HEAD: Final = ROLE_HEAD
# Ray's autoscaler launches through the ReplicaSet, a batch at a time: the node provider
# contract of the Ray cluster launcher, which BatchingNodeProvider and KubeRay also require.
_PROVIDER_FLAGS: Final = {
    "disable_node_updaters": True,
    "disable_launch_config_check": True,
    "foreground_node_launch": True,
}
_EMPTY_LAUNCHER_FIELDS: Final[dict[str, Any]] = {
    "auth": {},
    "file_mounts": {},
    "cluster_synced_files": [],
    "file_mounts_sync_continuously": False,
    "initialization_commands": [],
    "setup_commands": [],
    "head_setup_commands": [],
    "worker_setup_commands": [],
    "head_start_ray_commands": [],
    "worker_start_ray_commands": [],
}


def autoscaler_name(cluster: str) -> str:
    """The autoscaler's Deployment, ConfigMap, ServiceAccount, Role and RoleBinding."""
    return f"{cluster}-autoscaler"


@dataclass(frozen=True)
class ScaledGroup:
    """One worker group as the autoscaler sees it: a Ray node type with bounds."""

    node_type: str  # worker, or worker-<group>: the pods' role label
    deployment: str
    minimum: int
    maximum: int
    template: Obj  # as built (flags added), for the node's shape


def autoscaled_template(template: Obj) -> Obj:
    """A pod template labelled as an autoscaled cluster's (the operator watches those pods)."""
    template = copy.deepcopy(template)
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), LABEL_AUTOSCALING: "true"}
    return template


def gated_worker_template(template: Obj) -> Obj:
    """A worker template whose pods wait, unscheduled, for the operator to lift a gate.

    Why: to remove the workers Ray drained, the operator deletes them and then lowers the
    Deployment's count. In between, the ReplicaSet controller may create a replacement, and
    when the count drops it removes the pod that ranks first. An unscheduled pod always ranks
    first; a running one that is Ready would rank after a busy worker that is not Ready. The
    gate keeps every new pod unscheduled until no such removal is pending (lifted by the
    operator, ``controllers.ray_autoscaling``), so the ReplicaSet never picks a running worker.
    """
    template = copy.deepcopy(template)
    spec = template.setdefault("spec", {})
    gates = [g for g in spec.get("schedulingGates") or [] if g.get("name") != SCHEDULING_GATE]
    spec["schedulingGates"] = [*gates, {"name": SCHEDULING_GATE}]
    return template


def carries_gate(spec: Obj) -> bool:
    """A pod (or template) spec lists the operator's gate."""
    return any(g.get("name") == SCHEDULING_GATE for g in spec.get("schedulingGates") or [])


def gate_held(pod: Obj) -> bool:
    """The pod still waits for the operator's gate (and is not yet scheduled)."""
    spec = pod.get("spec") or {}
    return not spec.get("nodeName") and carries_gate(spec)


def gate_lift_patch(pod: Obj) -> list[Obj]:
    """A JSON patch that lifts the operator's gate from that pod, and only from that one.

    It tests the uid (never a namesake) and the gates as read (a concurrent change fails the
    patch, to be retried from the newer pod).
    """
    gates = pod["spec"].get("schedulingGates") or []
    rest = [g for g in gates if g.get("name") != SCHEDULING_GATE]
    lift: Obj = ({"op": "replace", "path": "/spec/schedulingGates", "value": rest} if rest
                 else {"op": "remove", "path": "/spec/schedulingGates"})
    return [
        {"op": "test", "path": "/metadata/uid", "value": pod["metadata"]["uid"]},
        {"op": "test", "path": "/spec/schedulingGates", "value": gates},
        lift,
    ]


def autoscaling_env(node_type: str) -> list[Obj]:
    """What every Ray container of an autoscaled cluster is given."""
    return [
        {"name": ENV_CLOUD_INSTANCE_ID, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": ENV_NODE_TYPE_NAME, "value": node_type},
        {"name": ENV_AUTOSCALER_V2, "value": "1"},
    ]


AUTOSCALING_ENV_NAMES: Final = frozenset({ENV_CLOUD_INSTANCE_ID, ENV_NODE_TYPE_NAME,
                                          ENV_AUTOSCALER_V2})


def autoscaling_config(
    name: str, namespace: str, idle_seconds: int, head_template: Obj, groups: list[ScaledGroup]
) -> Obj:
    """The cluster config Ray's autoscaler reads: node types with their shapes and bounds."""
    types: dict[str, Obj] = {
        NODE_TYPE_HEAD: {
            "node_config": {},
            "resources": node_shape(head_template, name=RAY_HEAD_CONTAINER).resources,
            "min_workers": 0,
            "max_workers": 0,
        }
    }
    for group in groups:
        types[group.node_type] = {
            "node_config": {},
            "resources": node_shape(group.template, name=RAY_WORKER_CONTAINER).resources,
            "min_workers": group.minimum,
            "max_workers": group.maximum,
        }
    return {
        "cluster_name": name,
        "max_workers": sum(g.maximum for g in groups),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_seconds / 60,
        "provider": {
            "type": "external",
            "module": f"{PROVIDER_MODULE}.RayNodeProvider",
            "namespace": namespace,
            "ray": name,
            **_PROVIDER_FLAGS,
        },
        "head_node_type": NODE_TYPE_HEAD,
        "available_node_types": types,
        **copy.deepcopy(_EMPTY_LAUNCHER_FIELDS),
    }


def allowed_replicas(desired: int, current: int | None, leaving: int) -> int:
    """The count a group's Deployment may take now.

    Up at once. Down only by the pods Ray drained and named that are leaving (the operator
    deletes them itself): the ReplicaSet then has nothing of its own to choose, and at most
    removes a replacement it has just made, which ranks first, being gated and unscheduled
    (:func:`gated_worker_template`). A lower
    count with no such pod (a hand edit) waits for Ray to drain workers.
    """
    if current is None or desired >= current:
        return desired
    return max(desired, current - leaving)


def node_state(pod: Obj) -> str:
    """A pod as Ray's autoscaler reads it: pending, running or failed."""
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Running":
        return "running"
    if phase in ("Failed", "Succeeded"):
        return "failed"
    return "pending"


def build_autoscaler_configmap(name: str, namespace: str, config: Obj, code: str,
                               metadata: Obj) -> Obj:
    """The node provider's code and the autoscaling config, as files of the autoscaler's pod."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**copy.deepcopy(metadata), "name": autoscaler_name(name),
                     "namespace": namespace},
        "data": {
            CODE_KEY: code,
            CONFIG_KEY: json.dumps(config, indent=1, sort_keys=True),
        },
    }


def build_autoscaler_rbac(name: str, namespace: str, metadata: Obj) -> list[Obj]:
    """The autoscaler's identity: it may read and patch its own ``Ray``, nothing else."""
    account = autoscaler_name(name)

    def meta() -> Obj:
        return {**copy.deepcopy(metadata), "name": account, "namespace": namespace}

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta()},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(),
            "rules": [
                {
                    "apiGroups": ["ray.kubeflow.org"],
                    "resources": ["rays"],
                    "resourceNames": [name],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    ]


def autoscaler_pod_template(
    name: str, head_template: Obj, labels: dict[str, str], extra_env: list[Obj]
) -> Obj:
    """The autoscaler's pod: the head's Ray image and security context, the config mounted."""
    pod = head_template.get("spec") or {}
    containers = pod.get("containers") or []
    ray = next((c for c in containers if c.get("name") == RAY_HEAD_CONTAINER),
               containers[0] if containers else {})
    container: Obj = {
        "name": AUTOSCALER_CONTAINER,
        "image": ray.get("image"),
        "command": ["python", "-u", f"{MOUNT_PATH}/{CODE_KEY}"],
        "env": [
            {"name": ENV_GCS_ADDRESS, "value": f"{name}-head:{PORT_GCS}"},
            {"name": ENV_RAY_NAME, "value": name},
            {"name": ENV_NAMESPACE,
             "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": ENV_CONFIG, "value": f"{MOUNT_PATH}/{CONFIG_KEY}"},
            {"name": "PYTHONPATH", "value": MOUNT_PATH},
            {"name": ENV_AUTOSCALER_V2, "value": "1"},
            *copy.deepcopy(extra_env),
        ],
        "ports": [{"name": "metrics", "containerPort": AUTOSCALER_METRICS_PORT}],
        # Ray's autoscaler process (KubeRay gives its sidecar the same).
        "resources": {
            "requests": {"cpu": "200m", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "volumeMounts": [{"name": "autoscaler", "mountPath": MOUNT_PATH, "readOnly": True}],
    }
    if "imagePullPolicy" in ray:
        container["imagePullPolicy"] = ray["imagePullPolicy"]
    # The image's user as the head runs it, and nothing more: a privileged head does not make a
    # privileged autoscaler.
    own = ray.get("securityContext") or {}
    container["securityContext"] = {
        **{k: own[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot") if k in own},
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    spec: Obj = {
        "serviceAccountName": autoscaler_name(name),
        "containers": [container],
        "volumes": [{"name": "autoscaler", "configMap": {"name": autoscaler_name(name)}}],
        "terminationGracePeriodSeconds": 10,
    }
    # Where the head may run and pull its image, the autoscaler may too (the pull secrets of
    # the head's ServiceAccount are not its own: name them in the head's pod to share them).
    for key in ("securityContext", "imagePullSecrets", "nodeSelector", "tolerations"):
        if key in pod:
            spec[key] = copy.deepcopy(pod[key])
    return {"metadata": {"labels": dict(labels)}, "spec": spec}
