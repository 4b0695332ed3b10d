"""Rules a ``Ray`` resource must follow beyond its schema, with messages that name the field.

The same rules run in the operator (reported as a Warning event and ``Health=False``) and in
``ray-operator validate`` (offline, before anything is applied).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ray_operator.api.constants import PORT_GCS
from ray_operator.api.node_shape import (
    RAY_HEAD_CONTAINER,
    RAY_WORKER_CONTAINER,
    node_shape,
    ray_start_container,
)
from ray_operator.api.pod_fields import FieldTable, unknown_fields
from ray_operator.api.quantity import quantity as parsed_quantity
from ray_operator.api.ray import RayResource, ReplicaSpec, WorkerGroup

# `{name}-worker` must be a DNS-1035 label (it names a Deployment and its pods' hostnames),
# and `{name}-head` names a Service, which must be one too.
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_MAX = 63
_LONGEST_SUFFIX = "-worker"
MAX_NAME_LENGTH = _LABEL_MAX - len(_LONGEST_SUFFIX)
_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Fields of the resource's own levels (outside pod templates), for "did you mean".
_SCALING = ("replicas", "template", "minReplicas", "maxReplicas", "scaleStrategy")
_OWN_FIELDS = {
    "spec": ("head", "worker", "workerGroups", "suspend", "auth", "gcsFaultTolerance",
             "networkPolicy", "autoscaling"),
    "head": ("replicas", "template"),
    "worker": _SCALING,
    "autoscaling": ("enabled", "idleTimeoutSeconds"),
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest."""

    field: str
    value: Any
    accepted: str

    def __str__(self) -> str:
        return f"{self.field}: {self.value!r} is not valid; {self.accepted}"


@dataclass
class Report:
    """What validation found: errors block reconciling, unknown fields are only reported."""

    errors: list[Problem] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)
    resource: RayResource | None = None

    @property
    def ok(self) -> bool:
        """No error (unknown fields are warnings)."""
        return not self.errors

    def message(self) -> str:
        """All errors on one line, for a condition or an event."""
        return "; ".join(str(p) for p in self.errors)


def validate_ray(
    obj: dict[str, Any], fields: FieldTable | None = None, in_cluster: bool = False
) -> Report:
    """Check a ``Ray`` manifest (a dict as read from YAML or the apiserver).

    ``fields``: the pod template fields the target apiserver knows (default: the shipped table).
    ``in_cluster``: the operator's judgement of a ``Ray`` as it stands, where a worker count
    outside ``[minReplicas, maxReplicas]`` (``kubectl scale``) is clamped and reported, not
    refused; a manifest with one is refused.
    """
    report = Report()
    name = obj.get("metadata", {}).get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _DNS_1035.match(name):
        report.errors.append(
            Problem(
                "metadata.name",
                name,
                f"a name of at most {MAX_NAME_LENGTH} characters, lower-case letters, digits and "
                f"'-', starting with a letter, so that '{{name}}{_LONGEST_SUFFIX}' is a valid "
                "object name",
            )
        )
    if "spec" not in obj:
        report.errors.append(Problem("spec", None, "a spec with at least 'worker'"))
        return report
    try:
        resource = RayResource.model_validate(obj)
    except ValidationError as exc:
        for err in exc.errors():
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            report.errors.append(Problem(where.lstrip("."), err.get("input"), _accepted(err)))
        return report
    report.resource = resource
    head = resource.spec.head
    if head is not None and head.replicas not in (None, 0, 1):
        report.errors.append(
            Problem("spec.head.replicas", head.replicas, "a Ray cluster has one head: 0 or 1")
        )
    for role, replica in (("head", head), ("worker", resource.spec.worker)):
        if replica is not None:
            _check_template(replica, f"spec.{role}", report, fields)
    for index, group in enumerate(resource.spec.workerGroups or []):
        _check_group(name if isinstance(name, str) else "", group, index, report, fields)
    _check_group_names(resource.spec.workerGroups or [], report)
    if resource.spec.networkPolicy is not None:
        _check_peers(resource.spec.networkPolicy.allowFrom, report)
    if resource.spec.gcsFaultTolerance is not None:
        _check_gcs_ft(resource, report)
    _check_scaling(resource, report, in_cluster)
    return report


def worker_groups(resource: RayResource) -> list[tuple[str, ReplicaSpec | WorkerGroup]]:
    """Every group of workers with the path of its spec: spec.worker, then spec.workerGroups."""
    groups: list[tuple[str, ReplicaSpec | WorkerGroup]] = [("spec.worker", resource.spec.worker)]
    groups += [(f"spec.workerGroups[{i}]", g)
               for i, g in enumerate(resource.spec.workerGroups or [])]
    return groups


def _check_scaling(resource: RayResource, report: Report, in_cluster: bool) -> None:
    """Replicas within [minReplicas, maxReplicas]; with autoscaling, everything it needs."""
    head = resource.spec.head
    for name in ("minReplicas", "maxReplicas", "scaleStrategy"):
        if head is not None and getattr(head, name) is not None:
            report.errors.append(Problem(
                f"spec.head.{name}", getattr(head, name),
                "nothing: a Ray cluster has one head, which is not scaled (only worker groups "
                "have minReplicas, maxReplicas and scaleStrategy)"))
    autoscaling = resource.spec.autoscaling is not None and resource.spec.autoscaling.enabled
    for path, group in worker_groups(resource):
        low, high = group.minReplicas, group.maxReplicas
        if low is not None and high is not None and low > high:
            report.errors.append(Problem(
                f"{path}.minReplicas", low, f"at most maxReplicas ({high})"))
        elif not in_cluster and group.replicas is not None and not (
            (low is None or group.replicas >= low) and (high is None or group.replicas <= high)
        ):
            report.errors.append(Problem(
                f"{path}.replicas", group.replicas,
                f"a count within [minReplicas {low or 0}, maxReplicas "
                f"{'unbounded' if high is None else high}] (in the cluster, a count outside is "
                "clamped to that range)"))
        if autoscaling:
            _check_autoscaled_group(path, group, report)
    if autoscaling:
        _check_autoscaled_head(resource, report)


def _check_autoscaled_group(path: str, group: ReplicaSpec | WorkerGroup, report: Report) -> None:
    if group.maxReplicas is None:
        report.errors.append(Problem(
            f"{path}.maxReplicas", None,
            "a number with spec.autoscaling enabled: the most workers of this group Ray's "
            "autoscaler may start (use replicas, minReplicas and maxReplicas all equal to keep a "
            "group at a fixed size)"))
    if group.template is None:
        shape_known = False
        where = f"{path}.template"
    else:
        raw = group.template.model_dump(exclude_none=True, by_alias=True)
        shape_known = node_shape(raw).cpu_known
        names = [c.get("name") for c in raw.get("spec", {}).get("containers") or []]
        index = names.index(RAY_WORKER_CONTAINER) if RAY_WORKER_CONTAINER in names else 0
        where = f"{path}.template.spec.containers[{index}].resources.limits.cpu"
    if not shape_known:
        report.errors.append(Problem(
            where, None,
            "a Ray container with a CPU limit (resources.limits.cpu) or `ray start "
            "--num-cpus=N`: with spec.autoscaling, Ray's autoscaler must know how many CPUs a "
            "worker of this group has before one exists"))


def _check_autoscaled_head(resource: RayResource, report: Report) -> None:
    head = resource.spec.head
    if head is not None and head.replicas == 0:
        report.errors.append(Problem(
            "spec.head.replicas", 0,
            "1 with spec.autoscaling: Ray's autoscaler reads the cluster's demand from the "
            "head's GCS"))
    if head is None or head.template is None:
        return
    raw = head.template.model_dump(exclude_none=True, by_alias=True)
    if ray_start_container(raw, RAY_HEAD_CONTAINER) is None:
        containers = raw.get("spec", {}).get("containers") or [{}]
        names = [c.get("name") for c in containers]
        index = names.index(RAY_HEAD_CONTAINER) if RAY_HEAD_CONTAINER in names else 0
        report.errors.append(Problem(
            f"spec.head.template.spec.containers[{index}].command",
            containers[index].get("command"),
            "with spec.autoscaling, a head whose Ray container runs `ray start` itself (command "
            "[ray], args [start, "
            "...]): the operator adds --no-monitor there (the autoscaler runs in its own pod)"))
    ports = [p.get("containerPort") for c in raw.get("spec", {}).get("containers", [])
             for p in c.get("ports") or []]
    if PORT_GCS not in ports:
        report.errors.append(Problem(
            "spec.head.template.spec.containers[].ports", ports,
            f"a head that exposes the GCS port {PORT_GCS}: the autoscaler reaches the GCS "
            "through the head Service"))


_HOST_PORT = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:(\d{1,5})$")


def _check_gcs_ft(resource: RayResource, report: Report) -> None:
    ft = resource.spec.gcsFaultTolerance
    assert ft is not None
    found = _HOST_PORT.match(ft.redisAddress)
    if found is None or not 0 < int(found.group(2)) < 65536:
        report.errors.append(Problem(
            "spec.gcsFaultTolerance.redisAddress", ft.redisAddress,
            "host:port of a Redis, e.g. redis.ray-system.svc:6379 (no scheme, one address)"))
    head = resource.spec.head
    if ft.redisPasswordSecret is not None and head is not None and head.template is not None:
        raw = head.template.model_dump(exclude_none=True, by_alias=True)
        if ray_start_container(raw, RAY_HEAD_CONTAINER) is None:
            report.errors.append(Problem(
                "spec.gcsFaultTolerance.redisPasswordSecret", ft.redisPasswordSecret.model_dump(),
                "a head whose Ray container runs `ray start` itself (command [ray], args [start, "
                "...]): Ray takes the password as --redis-password only; with another command, "
                "leave this out and pass --redis-password=$(REDIS_PASSWORD) yourself"))


# A group's pods are named {ray}-worker-{group}-<10>-<5>: at most 63 characters, a host name.
GROUP_DEPLOYMENT_MAX = _LABEL_MAX - len("-0123456789-abcde")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Ray's own resources: they come from the container's limits (--num-cpus, --num-gpus, --memory).
_RAY_BUILTIN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


def _check_group(
    ray: str, group: Any, index: int, report: Report, fields: FieldTable | None
) -> None:
    path = f"spec.workerGroups[{index}]"
    deployment = f"{ray}-worker-{group.name}"
    if not _DNS_LABEL.match(group.name):
        report.errors.append(Problem(
            f"{path}.name", group.name,
            "a DNS label: lower-case letters, digits and '-', starting and ending with a letter "
            "or digit"))
    elif len(deployment) > GROUP_DEPLOYMENT_MAX:
        report.errors.append(Problem(
            f"{path}.name", group.name,
            f"a name that keeps the group's Deployment {deployment!r} within "
            f"{GROUP_DEPLOYMENT_MAX} characters (its pods' names must be host names): at most "
            f"{max(GROUP_DEPLOYMENT_MAX - len(ray) - len('-worker-'), 0)} characters here"))
    _check_template(group, path, report, fields)
    if group.rayResources and group.template is not None:
        raw = group.template.model_dump(exclude_none=True, by_alias=True)
        if ray_start_container(raw) is None:
            report.errors.append(Problem(
                f"{path}.rayResources", group.rayResources,
                "custom resources for a Ray container that runs `ray start` itself (command "
                "[ray], args [start, ...]); with another command, pass --resources in it"))
    for resource, amount in (group.rayResources or {}).items():
        if resource in _RAY_BUILTIN_RESOURCES:
            report.errors.append(Problem(
                f"{path}.rayResources.{resource}", amount,
                "a custom resource name: CPU, GPU and memory come from the Ray container's "
                "limits (cpu, nvidia.com/gpu, memory)"))
        elif amount < 0:
            report.errors.append(Problem(
                f"{path}.rayResources.{resource}", amount, "an amount of at least 0"))


def _check_group_names(groups: list[Any], report: Report) -> None:
    seen: dict[str, int] = {}
    for index, group in enumerate(groups):
        if group.name in seen:
            report.errors.append(Problem(
                f"spec.workerGroups[{index}].name", group.name,
                f"a name of its own (spec.workerGroups[{seen[group.name]}] has it)"))
        seen.setdefault(group.name, index)


_SELECTOR_KEYS = frozenset({"matchLabels", "matchExpressions"})
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _check_selector(selector: dict[str, Any], path: str, report: Report) -> None:
    """A label selector as the apiserver takes it: string labels, well-formed expressions."""
    labels = selector.get("matchLabels")
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
    ):
        report.errors.append(Problem(
            f"{path}.matchLabels", labels, "a mapping of label names to string values"))
    expressions = selector.get("matchExpressions")
    if expressions is None:
        return
    if not isinstance(expressions, list):
        report.errors.append(Problem(f"{path}.matchExpressions", expressions,
                                     "a list of {key, operator, values}"))
        return
    for i, expr in enumerate(expressions):
        where = f"{path}.matchExpressions[{i}]"
        ok = isinstance(expr, dict) and isinstance(expr.get("key"), str)
        ok = ok and expr.get("operator") in _OPERATORS
        values = expr.get("values") if isinstance(expr, dict) else None
        needs = isinstance(expr, dict) and expr.get("operator") in ("In", "NotIn")
        if ok and needs:
            ok = isinstance(values, list) and bool(values) and all(
                isinstance(v, str) for v in values)
        elif ok:
            ok = not values
        if not ok:
            report.errors.append(Problem(
                where, expr, f"{{key, operator, values}} with operator one of {_OPERATORS}; "
                "In and NotIn need string values, Exists and DoesNotExist none"))


def _check_ip_block(block: dict[str, Any], path: str, report: Report) -> None:
    unknown = sorted(set(block) - {"cidr", "except"})
    accepted = "{cidr: 10.0.0.0/16, except: [10.0.1.0/24]}: CIDRs"
    try:
        ipaddress.ip_network(str(block.get("cidr")), strict=False)
        for inner in block.get("except") or []:
            ipaddress.ip_network(str(inner), strict=False)
    except ValueError:
        report.errors.append(Problem(path, block, accepted))
        return
    if unknown or "cidr" not in block:
        report.errors.append(Problem(path, block, accepted))


def _check_peers(peers: list[Any], report: Report) -> None:
    """Each peer says who (a selector or addresses), in the NetworkPolicy's own terms."""
    for index, peer in enumerate(peers):
        path = f"spec.networkPolicy.allowFrom[{index}]"
        given = peer.model_dump(exclude_none=True)
        if not given:
            report.errors.append(Problem(
                path, {}, "a peer with podSelector, namespaceSelector or ipBlock (an empty one "
                "would admit nobody)"))
        for name in ("podSelector", "namespaceSelector"):
            if name not in given:
                continue
            unknown = sorted(set(given[name]) - _SELECTOR_KEYS)
            if unknown:
                report.errors.append(Problem(
                    f"{path}.{name}", given[name], "a label selector: matchLabels and/or "
                    f"matchExpressions (not {', '.join(unknown)})"))
            _check_selector(given[name], f"{path}.{name}", report)
        block = given.get("ipBlock")
        if block is not None:
            _check_ip_block(block, f"{path}.ipBlock", report)
        if block is not None and len(given) > 1:
            report.errors.append(Problem(
                path, given, "either ipBlock or selectors in one peer, as in a NetworkPolicy"))


def _accepted(err: Any) -> str:
    """What is accepted instead of ``err``'s input, in the words of the manifest."""
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "extra_forbidden":
        known = _OWN_FIELDS.get(loc[-2] if len(loc) > 1 else "", ())
        hint = f"the fields here are {', '.join(known)}" if known else "check the spelling"
        return f"an unknown field ({hint}); it would be ignored"
    if err["type"] in ("int_type", "int_parsing", "int_from_float"):
        return "a whole number, without quotes"
    if err["type"] == "literal_error":
        return str(err["msg"]).replace("Input should be", "one of")
    return str(err["msg"]).lower()


def _check_container(container: Any, cpath: str, report: Report, seen: dict[str, str]) -> None:
    """Name and resources of one container, as the apiserver would judge them."""
    if not _DNS_1123_LABEL.match(container.name):
        report.errors.append(Problem(
            f"{cpath}.name", container.name,
            "a DNS label: lower-case letters, digits and '-', at most 63 characters",
        ))
    elif container.name in seen:
        report.errors.append(Problem(
            f"{cpath}.name", container.name, f"a name not used already by {seen[container.name]}"
        ))
    seen.setdefault(container.name, cpath)
    resources = getattr(container, "resources", None)
    if not isinstance(resources, dict):
        return
    for section in ("limits", "requests"):
        values = resources.get(section)
        if not isinstance(values, dict):
            continue
        for resource, quantity in values.items():
            if isinstance(quantity, bool) or parsed_quantity(str(quantity)) is None:
                report.errors.append(Problem(
                    f"{cpath}.resources.{section}.{resource}", quantity,
                    "a quantity such as 500m, 2, 1.5, 512Mi or 4Gi",
                ))


def _check_template(
    replica: ReplicaSpec, path: str, report: Report, fields: FieldTable | None
) -> None:
    if replica.template is None:
        return
    tpath = f"{path}.template"
    raw = replica.template.model_dump(exclude_none=True, by_alias=True)
    report.unknown_fields.extend(unknown_fields(raw, tpath, fields))
    spec = replica.template.spec
    if spec is None or not spec.containers:
        report.errors.append(
            Problem(
                f"{tpath}.spec.containers", [], "at least one container with a name and an image"
            )
        )
        return
    names: dict[str, str] = {}
    numbers: dict[tuple[int, str], str] = {}
    container_names: dict[str, str] = {}
    for ci, container in enumerate(spec.containers):
        cpath = f"{tpath}.spec.containers[{ci}]"
        if not container.image:
            report.errors.append(Problem(f"{cpath}.image", container.image, "a container image"))
        _check_container(container, cpath, report, container_names)
        for pi, port in enumerate(container.ports or []):
            ppath = f"{cpath}.ports[{pi}]"
            protocol = port.protocol or "TCP"
            if port.name:
                if port.name in names:
                    report.errors.append(
                        Problem(
                            f"{ppath}.name",
                            port.name,
                            f"a name not used already by {names[port.name]}",
                        )
                    )
                names[port.name] = ppath
            key = (port.containerPort, protocol)
            if key in numbers:
                report.errors.append(
                    Problem(
                        f"{ppath}.containerPort",
                        port.containerPort,
                        f"a {protocol} port not used already by {numbers[key]}",
                    )
                )
            numbers[key] = ppath
    if path == "spec.head" and not numbers:
        report.errors.append(Problem(
            f"{tpath}.spec.containers[].ports", [],
            "at least one port on a head container (6379 for the GCS, 8265 for the job API): the "
            "head Service exposes them, and a Service without ports is refused",
        ))
