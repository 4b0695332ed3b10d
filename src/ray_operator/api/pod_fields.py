"""Which fields a PodTemplateSpec may have, to report (and drop) fields Kubernetes ignores.

A field table lists, for each type reachable from ``PodTemplateSpec``, its fields and the type
of each. The operator reads it from its apiserver's OpenAPI v3 document at start, so every field
that apiserver knows passes through to the pods, whatever Kubernetes version added it.
``pod_fields.json``, shipped with the package, is the table of the Kubernetes version the project
is tested with, for ``ray-operator validate`` offline; a test compares it with the test apiserver
so the two cannot drift.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

ROOT = "io.k8s.api.core.v1.PodTemplateSpec"
FieldTable = dict[str, dict[str, str | None]]


# Where the core/v1 types are described in the apiserver's OpenAPI v3 documents.
OPENAPI_V3_CORE = "/openapi/v3/api/v1"


def extract_pod_fields(openapi_v3: dict[str, Any]) -> FieldTable:
    """The field table of every type reachable from PodTemplateSpec in an OpenAPI v3 document."""
    definitions: dict[str, Any] = openapi_v3["components"]["schemas"]
    table: FieldTable = {}
    pending = [ROOT]
    while pending:
        name = pending.pop()
        if name in table:
            continue
        fields: dict[str, str | None] = {}
        for field, schema in definitions[name].get("properties", {}).items():
            target = _object_ref(schema)
            fields[field] = target
            if target:
                pending.append(target)
        table[name] = fields
    return dict(sorted(table.items()))


def _object_ref(schema: dict[str, Any]) -> str | None:
    """The object type a field holds, directly or as array items (maps are left open)."""
    for node in (schema, schema.get("items", {})):
        for candidate in (node, *node.get("allOf", [])):  # v3 wraps references in allOf
            ref = candidate.get("$ref")
            if isinstance(ref, str):
                return ref.rsplit("/", 1)[-1]
    return None


@cache
def pod_field_table() -> FieldTable:
    """The field table shipped with the package."""
    text = resources.files("ray_operator.api").joinpath("pod_fields.json").read_text()
    table: FieldTable = json.loads(text)
    return table


# Types whose content is free-form even though OpenAPI names them (quantities, int-or-string).
_OPAQUE = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
}


def unknown_fields(template: Any, path: str, table: FieldTable | None = None) -> list[str]:
    """Paths of fields in ``template`` that a PodTemplateSpec does not have.

    ``table``: the apiserver's own (read at start); by default the one shipped with the package.
    """
    found: list[str] = []
    _walk(template, ROOT, path, table or pod_field_table(), found)
    return found


def _walk(value: Any, type_name: str, path: str, table: FieldTable, found: list[str]) -> None:
    if type_name in _OPAQUE or type_name not in table:
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, type_name, f"{path}[{i}]", table, found)
        return
    if not isinstance(value, dict):
        return
    fields = table[type_name]
    if type_name == "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta":
        return
    for key, child in value.items():
        if key not in fields:
            found.append(f"{path}.{key}")
            continue
        target = fields[key]
        if target:
            _walk(child, target, f"{path}.{key}", table, found)


def without_fields(template: Any, paths: list[str], prefix: str) -> Any:
    """A copy of ``template`` without the fields at ``paths`` (named as by ``unknown_fields``)."""
    result = json.loads(json.dumps(template))
    for full in paths:
        steps = _parse(full[len(prefix) :])
        node = result
        for step in steps[:-1]:
            node = node[step]
        last = steps[-1]
        if isinstance(node, dict) and isinstance(last, str):
            node.pop(last, None)
    return result


def _parse(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in path.strip(".").split("."):
        while "[" in part:
            head, _, rest = part.partition("[")
            if head:
                steps.append(head)
            index, _, part = rest.partition("]")
            steps.append(int(index))
        if part:
            steps.append(part)
    return steps
