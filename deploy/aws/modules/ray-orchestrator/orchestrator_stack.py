"""The ray-orchestrator stack: the pipeline as a Step Functions state machine running on EKS."""

from __future__ import annotations

import json
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
)
from constructs import Construct
from orchestrator_settings import OrchestratorSettings

from ray_operator.pipelines.asl import build_state_machine

#: Kubernetes group the state machine's role is mapped to by its EKS access entry.
STEP_FUNCTIONS_GROUP = "ray-orchestrator-step-functions"
#: What ``eks:runJob.sync`` does in the namespace: create the Job, follow it and its pod, read the
#: pod's log (``LogOptions``), delete the Job when an execution is stopped. Nothing else.
RUN_JOB_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["create", "delete", "get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]
#: Step Functions' log delivery to CloudWatch Logs; these actions take no resource-level scope.
LOG_DELIVERY_ACTIONS = [
    "logs:CreateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:DescribeLogGroups",
    "logs:DescribeResourcePolicies",
    "logs:GetLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:UpdateLogDelivery",
]


class RayOrchestratorStack(cdk.Stack):
    """State machine (from the project's ASL export), its log group, its role and cluster access."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: OrchestratorSettings,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        apply_tags(self, settings.context, settings.tags)
        apply_permissions_boundary(self, settings.context.permissions_boundary_arn)

        cluster = import_cluster(
            self,
            cluster_name=settings.eks_cluster_name,
            admin_role_arn=settings.eks_cluster_admin_role_arn,
            handler_role_arn=settings.eks_handler_role_arn,
            oidc_provider_arn=settings.eks_oidc_arn,
            endpoint=settings.eks_cluster_endpoint,
            certificate_authority=settings.eks_cert_auth_data,
        )

        # The runner pods: S3 on the data bucket (when given), no Kubernetes API rights needed.
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
        # eks:runJob.sync authenticates to the cluster with this role: it needs the cluster's
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
        self._grant_run_jobs(cluster, settings)

        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            # /aws/vendedlogs/ keeps the CloudWatch Logs resource policy small for Step Functions.
            log_group_name=f"/aws/vendedlogs/states/{settings.context.stack_name}",
            retention=logs.RetentionDays.TWO_YEARS,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

        definition = build_state_machine(
            settings.pipeline, settings.asl_options(), base_dir=settings.pipeline_dir
        )
        self.definition = definition
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            # TimeoutSeconds lives in the definition: StateMachine(timeout=) is ignored here.
            definition_body=sfn.DefinitionBody.from_string(json.dumps(definition)),
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

        emit_metadata(
            self,
            {
                "EksServiceAccountName": settings.service_account_name,
                "EksServiceAccountRoleArn": self.service_account.role.role_arn,
                "StateMachineArn": self.state_machine.state_machine_arn,
                "LogGroupArn": self.log_group.log_group_arn,
            },
        )

    def _grant_run_jobs(self, cluster: eks.ICluster, settings: OrchestratorSettings) -> None:
        """Map the role into the cluster (EKS access entry) with namespaced Job rights only."""
        access_entry = eks.CfnAccessEntry(
            self,
            "StateMachineAccessEntry",
            cluster_name=settings.eks_cluster_name,
            principal_arn=self.role.role_arn,
            kubernetes_groups=[STEP_FUNCTIONS_GROUP],
            type="STANDARD",
        )
        rbac = eks.KubernetesManifest(
            self,
            "StateMachineRbac",
            cluster=cluster,
            overwrite=False,
            manifest=[
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": STEP_FUNCTIONS_GROUP, "namespace": settings.namespace},
                    "rules": RUN_JOB_RULES,
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": STEP_FUNCTIONS_GROUP, "namespace": settings.namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": STEP_FUNCTIONS_GROUP,
                    },
                    "subjects": [
                        {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "Group",
                            "name": STEP_FUNCTIONS_GROUP,
                        }
                    ],
                },
            ],
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
