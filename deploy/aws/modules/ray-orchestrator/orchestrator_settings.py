"""Parameters of the ray-orchestrator module, validated before anything is synthesized."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.parameters import ModuleContext, ParameterReader

from ray_operator.api.pipeline import PipelineSpecError, RayPipelineResource, load_pipeline
from ray_operator.pipelines.asl import AslOptions

#: ServiceAccount the pipeline's runner pods use (output ``EksServiceAccountName``).
SERVICE_ACCOUNT_NAME = "ray-orchestrator"
DEFAULT_TIMEOUT_MINUTES = 360.0
DEFAULT_EXPORT_PATH = "/ray/export/"
#: The pipeline deployed when ``pipeline_file`` is not given, relative to the project root.
DEFAULT_PIPELINE_FILE = Path("examples/pipelines/train-inference/pipeline.yaml")
#: Runner image when ``runner_image`` is not given: the project's own default.
DEFAULT_RUNNER_IMAGE = AslOptions().runner_image


@dataclass(frozen=True)
class OrchestratorSettings:
    """Everything the ray-orchestrator stack is built from."""

    context: ModuleContext
    namespace: str
    eks_cluster_admin_role_arn: str
    eks_handler_role_arn: str
    eks_cluster_name: str
    eks_cluster_endpoint: str
    eks_oidc_arn: str
    eks_oidc_issuer: str
    eks_cert_auth_data: str
    pipeline: RayPipelineResource
    pipeline_dir: Path
    step_function_timeout: float = DEFAULT_TIMEOUT_MINUTES
    data_bucket_name: str | None = None
    pvc_name: str | None = None
    dra_export_path: str = DEFAULT_EXPORT_PATH
    tags: dict[str, str] = field(default_factory=dict)
    runner_image: str = DEFAULT_RUNNER_IMAGE
    service_account_name: str = SERVICE_ACCOUNT_NAME

    @property
    def timeout_seconds(self) -> int:
        """``step_function_timeout`` (minutes) as the state machine's ``TimeoutSeconds``."""
        return max(1, round(self.step_function_timeout * 60))

    def asl_options(self) -> AslOptions:
        """Options of the pipeline's Step Functions export, all taken from the parameters."""
        return AslOptions(
            cluster_name=self.eks_cluster_name,
            endpoint=self.eks_cluster_endpoint,
            certificate_authority=self.eks_cert_auth_data,
            namespace=self.namespace,
            runner_image=self.runner_image,
            service_account=self.service_account_name,
            timeout_seconds=self.timeout_seconds,
            # None: the pipeline file's pvcName, if any (the example has none: no volume).
            pvc_name=self.pvc_name,
            export_path=self.dra_export_path,
        )

    @classmethod
    def from_env(
        cls, project_root: Path, env: Mapping[str, str] | None = None
    ) -> OrchestratorSettings:
        """Read ``SEEDFARMER_*`` variables; raise ``ParameterError`` naming every bad parameter.

        ``pipeline_file`` (relative paths are taken from ``project_root``) is loaded and checked
        here too, so a broken pipeline fails before synthesis, named by that parameter.
        """
        reader = ParameterReader(os.environ if env is None else env)
        context = reader.context()
        namespace = reader.namespace("namespace")
        admin_role_arn = reader.role_arn("eks_cluster_admin_role_arn")
        handler_role_arn = reader.role_arn("eks_handler_role_arn")
        cluster_name = reader.cluster_name("eks_cluster_name")
        endpoint = reader.https_url("eks_cluster_endpoint")
        oidc_arn, issuer = reader.oidc_provider_arn("eks_oidc_arn")
        cert = reader.base64("eks_cert_auth_data")
        timeout = reader.positive_minutes("step_function_timeout", DEFAULT_TIMEOUT_MINUTES)
        bucket = reader.bucket_name("data_bucket_name")
        pvc_name = reader.object_name("pvc_name")
        export_path = reader.absolute_path("dra_export_path", DEFAULT_EXPORT_PATH)
        tags = reader.tags("tags")
        runner_image = reader.image("runner_image") or DEFAULT_RUNNER_IMAGE
        pipeline_path = project_root / (reader.text("pipeline_file") or DEFAULT_PIPELINE_FILE)
        pipeline = None
        try:
            pipeline = load_pipeline(pipeline_path)
        except PipelineSpecError as error:
            reader.problem("pipeline_file", str(error))
        reader.check()
        assert pipeline is not None  # a load failure is a problem, raised by check()
        if bucket:
            # The steps receive the module's bucket, the one their service account may use.
            spec = pipeline.spec.model_copy(update={"dataBucket": bucket})
            pipeline = pipeline.model_copy(update={"spec": spec})
        return cls(
            context=context,
            namespace=namespace,
            eks_cluster_admin_role_arn=admin_role_arn,
            eks_handler_role_arn=handler_role_arn,
            eks_cluster_name=cluster_name,
            eks_cluster_endpoint=endpoint,
            eks_oidc_arn=oidc_arn,
            eks_oidc_issuer=issuer,
            eks_cert_auth_data=cert,
            pipeline=pipeline,
            pipeline_dir=pipeline_path.parent,
            step_function_timeout=timeout,
            data_bucket_name=bucket,
            pvc_name=pvc_name,
            dra_export_path=export_path,
            tags=tags,
            runner_image=runner_image,
        )
