"""Apply a pipeline's manifests with the caller's kubeconfig: scripts first, then the pipeline."""

from __future__ import annotations

from typing import Any

from ray_operator.builders.raypipeline import LABEL_PIPELINE
from ray_operator.cli.dashboard import default_kubeconfig
from ray_operator.kube import CONFIGMAP, RAYPIPELINE, CredentialsError, Kube, KubeError
from ray_operator.pipelines.in_cluster import ClusterManifests, owned_by

Obj = dict[str, Any]


class ApplyError(RuntimeError):
    """The cluster refused or could not be reached; the message says which object and why."""


async def _refuse_foreign(kube: Kube, scripts: Obj, namespace: str) -> None:
    """A ConfigMap of that name that is not this pipeline's scripts is never replaced."""
    name = scripts["metadata"]["name"]
    existing = await kube.get_or_none(CONFIGMAP, name, namespace)
    if existing is None:
        return
    ours = scripts["metadata"]["labels"][LABEL_PIPELINE]
    if (existing["metadata"].get("labels") or {}).get(LABEL_PIPELINE) != ours:
        raise ApplyError(
            f"ConfigMap {namespace}/{name} exists and does not hold pipeline {ours!r}'s scripts "
            f"(no label {LABEL_PIPELINE}={ours}): it is left as it is; delete or rename it"
        )


async def apply_pipeline(
    manifests: ClusterManifests, namespace: str | None, context: str | None
) -> list[str]:
    """Create or replace the scripts ConfigMap and the RayPipeline; what was applied.

    The ConfigMap goes first, so that the first step's runner finds its script; then it is
    given the pipeline as owner, so that deleting the pipeline deletes its scripts.
    """
    try:
        kube = await Kube.connect(default_kubeconfig(), context)
    except CredentialsError as exc:
        raise ApplyError(f"cannot log in to the cluster: {exc}") from None
    try:
        ns = namespace or kube.credentials.namespace
        done: list[str] = []
        name = manifests.pipeline["metadata"]["name"]
        try:
            if manifests.scripts is not None:
                await _refuse_foreign(kube, manifests.scripts, ns)
                await kube.apply_manifest(manifests.scripts, ns)
            pipeline = await kube.apply_manifest(manifests.pipeline, ns)
            if manifests.scripts is not None:
                scripts = manifests.scripts["metadata"]["name"]
                await kube.patch(CONFIGMAP, scripts, owned_by(pipeline), ns)
                keys = ", ".join(sorted(manifests.scripts["data"]))
                done.append(f"configmap/{scripts} applied in {ns} (scripts: {keys})")
        except KubeError as exc:
            raise ApplyError(f"cannot apply pipeline {ns}/{name}: {exc}") from None
        done.append(f"{RAYPIPELINE.kind.lower()}/{name} applied in {ns}")
        return done
    finally:
        await kube.close()
