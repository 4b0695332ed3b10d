"""The ray-orchestrator stack: the pipeline as a Step Functions state machine running on EKS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_eks as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from common.nag import acknowledge, acknowledge_kubectl_provider
from common.resources import (
    IrsaServiceAccount,
    apply_permissions_boundary,
    apply_tags,
    emit_metadata,
    import_cluster,
    module_image,
)
from constructs import Construct
from orchestrator_settings import ACCESS_ENTRY, OrchestratorSettings

from ray_operator.pipelines.asl import build_state_machine, kubernetes_rules


class RayOrchestratorStack(cdk.Stack):
    """State machine (from the project's ASL export), its log group, its role and cluster access."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: OrchestratorSettings,
        runner_image: str,
        repository_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        apply_tags(self, settings.context, settings.tags)
        apply_permissions_boundary(self, settings.context.permissions_boundary_arn)

        cluster = import_cluster(
            self,
            cluster_name=settings.eks_cluster_name,
            admin_role_arn=settings.eks_cluster_admin_role_arn,
            # Used as given: it belongs to the cluster's module (CDK's grants to it are dropped).
            handler_role=iam.Role.from_role_arn(
                self, "KubectlHandlerRole", settings.eks_handler_role_arn, mutable=False
            ),
            oidc_provider_arn=settings.eks_oidc_arn,
            endpoint=settings.eks_cluster_endpoint,
            certificate_authority=settings.eks_cert_auth_data,
        )

        # The runner pods and the pods of each execution's Ray: S3 on the data bucket (when
        # given), no Kubernetes API rights.
        self.service_account = IrsaServiceAccount(
            self,
            "ServiceAccount",
            cluster=cluster,
            oidc_provider_arn=settings.eks_oidc_arn,
            oidc_issuer=settings.eks_oidc_issuer,
            namespace=settings.namespace,
            name=settings.service_account_name,
            bucket_name=settings.data_bucket_name,
            description=f"Ray pipeline steps in {settings.eks_cluster_name}/{settings.namespace}",
        )

        self.role = iam.Role(
            self,
            "StateMachineRole",
            description=f"Step Functions running Ray pipeline {settings.pipeline.name}",
            assumed_by=iam.ServicePrincipal(
                "states.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            ),
        )
        # The EKS integrations authenticate to the cluster with this role: it needs the cluster's
        # endpoint data, then Kubernetes RBAC (below) decides what it may do there.
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DescribeTheCluster",
                actions=["eks:DescribeCluster"],
                resources=[
                    self.format_arn(
                        service="eks", resource="cluster", resource_name=settings.eks_cluster_name
                    )
                ],
            )
        )

        self.definition = build_state_machine(
            settings.pipeline, settings.asl_options(runner_image), base_dir=settings.pipeline_dir
        )
        self._grant_cluster_access(cluster, settings)

        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            # /aws/vendedlogs/ keeps the CloudWatch Logs resource policy small for Step Functions.
            log_group_name=f"/aws/vendedlogs/states/{settings.context.stack_name}",
            retention=logs.RetentionDays.TWO_YEARS,
            # Named after the deployment: kept after a destroy, it would make the next deploy
            # with the same names fail ("already exists").
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            # TimeoutSeconds lives in the definition: StateMachine(timeout=) is ignored here.
            definition_body=sfn.DefinitionBody.from_string(json.dumps(self.definition)),
            role=self.role,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=False,
        )
        self._acknowledge_findings(settings)
        acknowledge_kubectl_provider(self, cluster)
        # Reported on this stack (the nested template's warnings surface at its parent).
        acknowledge(
            self,
            "CloudFormation-Validate::W8001",
            "CDK's kubectl provider template keeps its HasEcrPublic condition unused when the"
            " handler role is given (eks_handler_role_arn) instead of created",
        )

        metadata = {
            "EksServiceAccountName": settings.service_account_name,
            "EksServiceAccountRoleArn": self.service_account.role.role_arn,
            "StateMachineArn": self.state_machine.state_machine_arn,
            "LogGroupArn": self.log_group.log_group_arn,
            # What the deployspec's aws-auth step (deploy/aws/common/aws_auth.py) maps.
            "StateMachineRoleArn": self.role.role_arn,
            "EksAccessMode": settings.eks_access_mode,
            "KubernetesGroup": settings.kubernetes_group,
            "KubernetesUsername": settings.kubernetes_group,
            "ImageUri": runner_image,
        }
        if repository_name:
            metadata["EcrRepositoryName"] = repository_name
        emit_metadata(self, metadata)

    def _grant_cluster_access(self, cluster: eks.ICluster, settings: OrchestratorSettings) -> None:
        """The role's Kubernetes group may do in the namespace what the definition calls.

        With ``access_entry`` an EKS access entry maps the role to the group; with ``aws_auth``
        the deployspec adds it to aws-auth after the deploy (CloudFormation cannot merge it).
        """
        name = settings.kubernetes_group
        rbac = eks.KubernetesManifest(
            self,
            "StateMachineRbac",
            cluster=cluster,
            overwrite=False,
            manifest=[
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": name, "namespace": settings.namespace},
                    "rules": kubernetes_rules(self.definition),
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": name, "namespace": settings.namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": name,
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name}
                    ],
                },
            ],
        )
        if settings.eks_access_mode == ACCESS_ENTRY:
            access_entry = eks.CfnAccessEntry(
                self,
                "StateMachineAccessEntry",
                cluster_name=settings.eks_cluster_name,
                principal_arn=self.role.role_arn,
                kubernetes_groups=[name],
                type="STANDARD",
            )
            rbac.node.add_dependency(access_entry)

    def _acknowledge_findings(self, settings: OrchestratorSettings) -> None:
        """The AWS Solutions findings on this stack's own resources, and why they are accepted."""
        acknowledge(
            self.state_machine,
            "AwsSolutions-SF2",
            "X-Ray tracing is off so the role needs no xray:* rights; each step's progress and"
            " logs are in the execution history, the log group and the Ray job logs",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "CloudWatch Logs delivery actions (logs:*LogDelivery*, DescribeLogGroups,"
            " DescribeResourcePolicies, PutResourcePolicy) support no resource-level permissions",
        )
        if settings.data_bucket_name:
            acknowledge(
                self.service_account.role,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{settings.data_bucket_name}/*]",
                "object access is limited to the one data bucket given as data_bucket_name;"
                " the pipeline steps choose the object keys",
            )


def build_app(
    app: cdk.App, settings: OrchestratorSettings, *, root: Path
) -> tuple[RayOrchestratorStack, cdk.Stack | None]:
    """The module's stacks: its image repository (unless ``runner_image``), then the pipeline."""
    context = settings.context
    image, repository = module_image(app, context, root, settings.runner_image, settings.tags)
    stack = RayOrchestratorStack(
        app,
        context.stack_name,
        settings=settings,
        runner_image=image,
        repository_name=context.repository_name if repository else None,
        env=cdk.Environment(account=context.account, region=context.region),
        description=f"Ray pipeline {settings.pipeline.name} as a Step Functions state machine",
    )
    if repository is not None:
        # Deployed first (the image is pushed in between), destroyed last.
        stack.add_stack_dependency(repository)
    return stack, repository
