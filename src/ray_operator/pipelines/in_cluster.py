"""A local pipeline file as what the cluster runs: a ``RayPipeline`` and a ConfigMap of its scripts.

A pipeline file names its scripts as files beside it; in the cluster those files are not there.
:func:`cluster_manifests` puts each such file's text under one key of a ConfigMap
(``<pipeline>-scripts``) and points the step at it (``scriptFrom.configMapKeyRef``): the runner
Pod mounts the key, so the operator never carries or reads the script, and the manifest stays
short. Inline and S3 scripts, and absolute paths (in the runner image), stay as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ray_operator.api.pipeline import PipelineSpecError, RayPipelineResource, resolve_script
from ray_operator.builders.raypipeline import LABEL_PIPELINE, fit_name, pipeline_label

Obj = dict[str, Any]

# What the apiserver stores in one ConfigMap (data and keys together).
CONFIGMAP_MAX_BYTES: Final = 1024 * 1024
_KEY_UNSAFE: Final = re.compile(r"[^-._a-zA-Z0-9]")


@dataclass(frozen=True)
class ClusterManifests:
    """The RayPipeline to apply and, when a step's script is a local file, its ConfigMap."""

    pipeline: Obj
    scripts: Obj | None


def scripts_configmap_name(pipeline: str) -> str:
    """The ConfigMap that holds a pipeline's script files."""
    return fit_name(f"{pipeline}-scripts", 253)


def pipeline_document(resource: RayPipelineResource, cluster: str | None = None) -> Obj:
    """The pipeline as a manifest: name, spec (``cluster`` overrides ``spec.cluster``)."""
    document: Obj = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
    document.pop("status", None)
    document["metadata"] = {"name": resource.name}
    if cluster is not None:
        document["spec"]["cluster"] = cluster
    return document


def is_local_file(step_location: str, script: str) -> bool:
    """A script that is a file beside the pipeline file (not in the cluster as it is)."""
    return step_location == "file" and not script.startswith("/")


def _key(file_name: str, step: str, taken: dict[str, str], text: str) -> str:
    key = _KEY_UNSAFE.sub("-", file_name) or f"{step}.py"
    if taken.get(key, text) != text:  # two different files of one name
        key = f"{step}.{key}"
    return key


def cluster_manifests(
    resource: RayPipelineResource, base_dir: Path, cluster: str | None = None
) -> ClusterManifests:
    """The RayPipeline with its local script files moved into a ConfigMap of its own."""
    document = pipeline_document(resource, cluster)
    name = scripts_configmap_name(resource.name)
    data: dict[str, str] = {}
    for index, step in enumerate(resource.spec.steps):
        if not is_local_file(step.script_location, step.script):
            continue
        text = resolve_script(step, base_dir) or ""
        key = _key(Path(step.script).name, step.name, data, text)
        data[key] = text
        written = document["spec"]["steps"][index]
        written.pop("script", None)
        written.pop("scriptLocation", None)
        written["scriptFrom"] = {"configMapKeyRef": {"name": name, "key": key}}
    if not data:
        return ClusterManifests(document, None)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
    if size > CONFIGMAP_MAX_BYTES:
        raise PipelineSpecError(
            str(base_dir),
            [f"steps: the script files add up to {size} bytes, more than a ConfigMap holds "
             f"({CONFIGMAP_MAX_BYTES}); put the large ones in S3 (script: s3://bucket/key)"],
        )
    configmap: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {LABEL_PIPELINE: pipeline_label(resource.name)}},
        "data": data,
    }
    return ClusterManifests(document, configmap)


def owned_by(pipeline: Obj) -> Obj:
    """The merge patch that makes the scripts ConfigMap go with its pipeline."""
    meta = pipeline["metadata"]
    return {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": pipeline["apiVersion"],
                    "kind": pipeline["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ]
        }
    }
