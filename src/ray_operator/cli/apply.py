"""Apply a pipeline's manifests with the caller's kubeconfig: scripts first, then the pipeline."""

from __future__ import annotations

from ray_operator.cli.dashboard import default_kubeconfig
from ray_operator.kube import CONFIGMAP, RAYPIPELINE, CredentialsError, Kube, KubeError
from ray_operator.pipelines.in_cluster import ClusterManifests, owned_by


class ApplyError(RuntimeError):
    """The cluster refused or could not be reached; the message says which object and why."""


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
