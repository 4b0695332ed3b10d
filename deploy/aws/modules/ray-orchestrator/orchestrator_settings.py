"""Parameters of the ray-orchestrator module, validated before anything is synthesized."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.parameters import ModuleContext, ParameterReader

from ray_operator.api.pipeline import PipelineSpecError, RayPipelineResource, load_pipeline
from ray_operator.api.ray import RaySpec
from ray_operator.pipelines.asl import AslOptions

DEFAULT_TIMEOUT_MINUTES = 360.0
DEFAULT_EXPORT_PATH = "/ray/export/"
#: The pipeline deployed when ``pipeline_file`` is not given, relative to the project root.
DEFAULT_PIPELINE_FILE = Path("examples/pipelines/train-inference/pipeline.yaml")
#: The Ray each execution creates when the pipeline file has no ``rayClusterSpec``: the operator's
#: default head and two workers (the example trains with two Ray Train workers).
DEFAULT_RAY_CLUSTER: dict[str, object] = {"worker": {"replicas": 2}}
#: How the state machine's role gets into the cluster: an EKS access entry, or an aws-auth entry.
ACCESS_ENTRY = "access_entry"
AWS_AUTH = "aws_auth"
ACCESS_MODES = (ACCESS_ENTRY, AWS_AUTH)
#: The cluster's authenticationMode, as the deployspec reads it (aws eks describe-cluster):
#: the default of eks_access_mode.
AUTHENTICATION_MODE_VARIABLE = "EKS_AUTHENTICATION_MODE"
_MODE_FOR_AUTHENTICATION = {
    "API": ACCESS_ENTRY,
    "API_AND_CONFIG_MAP": ACCESS_ENTRY,
    "CONFIG_MAP": AWS_AUTH,
    # Clusters from before access entries report no accessConfig: aws-auth is all they have.
    "None": AWS_AUTH,
}
_GROUP_SUFFIX = "-step-functions"


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
    eks_access_mode: str
    step_function_timeout: float = DEFAULT_TIMEOUT_MINUTES
    data_bucket_name: str | None = None
    pvc_name: str | None = None
    dra_export_path: str = DEFAULT_EXPORT_PATH
    tags: dict[str, str] = field(default_factory=dict)
    runner_image: str | None = None

    @property
    def timeout_seconds(self) -> int:
        """``step_function_timeout`` (minutes) as the state machine's ``TimeoutSeconds``."""
        return max(1, round(self.step_function_timeout * 60))

    @property
    def service_account_name(self) -> str:
        """The runner and Ray pods' ServiceAccount (output ``EksServiceAccountName``).

        Named after the deployment and module: two deployments in one namespace keep their own.
        """
        return self.context.kubernetes_name()

    @property
    def kubernetes_group(self) -> str:
        """The Kubernetes group of the state machine's role; also its Role and RoleBinding."""
        return self.context.kubernetes_name(63 - len(_GROUP_SUFFIX)) + _GROUP_SUFFIX

    @property
    def ray_cluster(self) -> RaySpec:
        """The Ray each execution creates: the pipeline file's ``rayClusterSpec``, or a default."""
        return self.pipeline.spec.rayClusterSpec or RaySpec.model_validate(DEFAULT_RAY_CLUSTER)

    def asl_options(self, runner_image: str) -> AslOptions:
        """Options of the pipeline's Step Functions export, all taken from the parameters."""
        return AslOptions(
            cluster_name=self.eks_cluster_name,
            endpoint=self.eks_cluster_endpoint,
            certificate_authority=self.eks_cert_auth_data,
            namespace=self.namespace,
            runner_image=runner_image,
            service_account=self.service_account_name,
            timeout_seconds=self.timeout_seconds,
            # None: the pipeline file's pvcName, if any (the example has none: no volume).
            pvc_name=self.pvc_name,
            export_path=self.dra_export_path,
            # Each execution runs on a Ray of its own, which carries the volume (when given) and
            # the service account (the steps' code runs there and uses the data bucket).
            ray_cluster=self.ray_cluster,
            ray_service_account=self.service_account_name,
        )

    @classmethod
    def from_env(
        cls, project_root: Path, env: Mapping[str, str] | None = None
    ) -> OrchestratorSettings:
        """Read ``SEEDFARMER_*`` variables; raise ``ParameterError`` naming every bad parameter.

        ``pipeline_file`` (relative paths are taken from ``project_root``) is loaded and checked
        here too, so a broken pipeline fails before synthesis, named by that parameter.
        """
        env = os.environ if env is None else env
        reader = ParameterReader(env)
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
        runner_image = reader.image("runner_image")
        access_mode = reader.choice("eks_access_mode", ACCESS_MODES)
        if access_mode is None and reader.text("eks_access_mode") is None:
            authentication = env.get(AUTHENTICATION_MODE_VARIABLE, "").strip()
            access_mode = _MODE_FOR_AUTHENTICATION.get(authentication)
            if access_mode is None:
                reader.problem(
                    "eks_access_mode",
                    f"is not set and {AUTHENTICATION_MODE_VARIABLE}={authentication!r} is not a"
                    f" cluster authentication mode ({', '.join(_MODE_FOR_AUTHENTICATION)}): set"
                    f" one of {', '.join(ACCESS_MODES)}, or {AUTHENTICATION_MODE_VARIABLE} as"
                    " the deployspec does",
                )
        pipeline_path = project_root / (reader.text("pipeline_file") or DEFAULT_PIPELINE_FILE)
        pipeline = None
        try:
            pipeline = load_pipeline(pipeline_path)
        except PipelineSpecError as error:
            reader.problem("pipeline_file", str(error))
        reader.check()
        assert pipeline is not None and access_mode is not None  # else check() raised
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
            eks_access_mode=access_mode,
            step_function_timeout=timeout,
            data_bucket_name=bucket,
            pvc_name=pvc_name,
            dra_export_path=export_path,
            tags=tags,
            runner_image=runner_image,
        )
