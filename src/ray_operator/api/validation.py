"""Rules a ``Ray`` resource must follow beyond its schema, with messages that name the field.

The same rules run in the operator (reported as a Warning event and ``Health=False``) and in
``ray-operator validate`` (offline, before anything is applied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ray_operator.api.pod_fields import FieldTable, unknown_fields
from ray_operator.api.ray import RayResource, ReplicaSpec

# `{name}-worker` must be a DNS-1035 label (it names a Deployment and its pods' hostnames),
# and `{name}-head` names a Service, which must be one too.
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_MAX = 63
_LONGEST_SUFFIX = "-worker"
MAX_NAME_LENGTH = _LABEL_MAX - len(_LONGEST_SUFFIX)
_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A Kubernetes resource.Quantity: a number, then a binary (Ki..Ei), decimal (m, k, M..E) or
# exponent (e3, E-2) suffix.
_QUANTITY = re.compile(
    r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)
# Fields of the resource's own levels (outside pod templates), for "did you mean".
_OWN_FIELDS = {"spec": ("head", "worker", "suspend"), "head": ("replicas", "template"),
               "worker": ("replicas", "template")}


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


def validate_ray(obj: dict[str, Any], fields: FieldTable | None = None) -> Report:
    """Check a ``Ray`` manifest (a dict as read from YAML or the apiserver).

    ``fields``: the pod template fields the target apiserver knows (default: the shipped table).
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
    return report


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
            if isinstance(quantity, bool) or not _QUANTITY.match(str(quantity)):
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
