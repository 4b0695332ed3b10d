"""CustomResourceDefinitions generated from the typed models: the models are the one source.

``ray-operator crds`` prints them and the Helm chart ships them; a test fails when the chart's
copy drifts from what this module generates.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ray_operator.api.constants import GROUP, VERSION
from ray_operator.api.ray import RaySpec, RayStatus
from ray_operator.api.validation import MAX_NAME_LENGTH

Schema = dict[str, Any]


def openapi_schema(model: type[BaseModel]) -> Schema:
    """A structural OpenAPI v3 schema (as CRDs require) from a pydantic model.

    References are inlined, ``X | None`` becomes ``nullable``, and models that keep unknown
    fields get ``x-kubernetes-preserve-unknown-fields`` so the apiserver does not prune them.
    """
    raw = model.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Schema] = raw.get("$defs", {})
    return _structural(raw, defs)


def _structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    if "$ref" in node:
        return _structural(defs[node["$ref"].split("/")[-1]], defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        merged: Schema = _structural(options[0], defs) if len(options) == 1 else {}
        if len(options) != len(node["anyOf"]):
            merged["nullable"] = True
        if "description" in node:
            merged["description"] = node["description"]
        return merged
    out: Schema = {}
    kind = node.get("type")
    if kind:
        out["type"] = kind
    for key in ("description", "minimum", "maximum", "enum", "format"):
        if key in node:
            out[key] = node[key]
    if kind == "object":
        props = node.get("properties")
        if props:
            out["properties"] = {k: _structural(v, defs) for k, v in props.items()}
            required = node.get("required")
            if required:
                out["required"] = list(required)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        elif extra is True or (extra is None and not props) or extra == {}:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _structural(node.get("items", {}), defs)
    return out


def crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    printer_columns: list[Schema],
    scale: Schema | None = None,
    rules: list[Schema] | None = None,
) -> Schema:
    """One namespaced CRD of this project's group, with a status subresource.

    ``rules`` are CEL rules on the whole object (for what involves ``metadata.name``).
    """
    status_schema = openapi_schema(status_model)
    # Keys of status written by other tools are kept, not pruned.
    status_schema["x-kubernetes-preserve-unknown-fields"] = True
    subresources: Schema = {"status": {}}
    if scale:
        subresources["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                **({"shortNames": short_names} if short_names else {}),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(spec_model),
                                "status": status_schema,
                            },
                            "required": ["spec"],
                            **({"x-kubernetes-validations": rules} if rules else {}),
                        }
                    },
                }
            ],
        },
    }


def ray_crd() -> Schema:
    """The CRD of the ``Ray`` resource."""
    definition = crd(
        kind="Ray",
        plural="rays",
        short_names=[],  # not "rc": kubectl already means ReplicationControllers by it
        spec_model=RaySpec,
        status_model=RayStatus,
        printer_columns=[
            {"name": "Head", "type": "string", "jsonPath": ".status.headReady"},
            {"name": "Workers", "type": "string", "jsonPath": ".status.workersReady"},
            {"name": "Health", "type": "string", "jsonPath": ".status.health"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        scale={
            "specReplicasPath": ".spec.worker.replicas",
            "statusReplicasPath": ".status.worker.replicas",
            "labelSelectorPath": ".status.workerSelector",
        },
        rules=[
            {
                # The children are {name}-head and {name}-worker: DNS-1035 labels of <= 63.
                "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && "
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": f"metadata.name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} "
                "characters (lower case letters, digits and '-', starting with a letter): it "
                "names the Deployment {name}-worker and the Service {name}-head",
            }
        ],
    )
    version = definition["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    spec["head"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.replicas) || self.replicas <= 1",
            "fieldPath": ".replicas",
            "message": "a Ray cluster has one head: spec.head.replicas is 0 or 1",
        },
        {
            "rule": "!has(self.minReplicas) && !has(self.maxReplicas) && "
            "!has(self.scaleStrategy)",
            "message": "the head is not scaled: minReplicas, maxReplicas and scaleStrategy are "
            "for worker groups",
        },
    ]
    # Not replicas within the bounds: kubectl scale outside them is clamped, not refused.
    bounds = {
        "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || "
        "self.minReplicas <= self.maxReplicas",
        "fieldPath": ".minReplicas",
        "message": "minReplicas must be at most maxReplicas",
    }
    spec["worker"]["x-kubernetes-validations"] = [bounds]
    spec["workerGroups"]["items"]["x-kubernetes-validations"] = [bounds]
    return definition


def all_crds() -> list[Schema]:
    """Every CRD of the project, in install order."""
    from ray_operator.api.pipeline import raypipeline_crd
    from ray_operator.api.rayjob import rayjob_crd

    return [ray_crd(), rayjob_crd(), raypipeline_crd()]
