"""Constructs both modules build the same way: the imported cluster, IRSA, tags, metadata."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_eks as eks
from aws_cdk import aws_iam as iam
from aws_cdk.lambda_layer_kubectl_v31 import KubectlV31Layer
from constructs import Construct

from common.parameters import ModuleContext

#: Tag every taggable resource carries, valued ``{project}-{deployment}-{module}``.
DEPLOYMENT_TAG = "Deployment"


def apply_tags(scope: Construct, context: ModuleContext, tags: dict[str, str]) -> None:
    """Tag everything under ``scope`` (nested stacks included) with the deployment and ``tags``."""
    cdk.Tags.of(scope).add(DEPLOYMENT_TAG, context.stack_name[:256])
    for key, value in tags.items():
        cdk.Tags.of(scope).add(key, value)


def apply_permissions_boundary(scope: Construct, boundary_arn: str | None) -> None:
    """Put ``boundary_arn`` on every IAM role created under ``scope`` (nested stacks included)."""
    if boundary_arn:
        iam.PermissionsBoundary.of(scope).apply(
            iam.ManagedPolicy.from_managed_policy_arn(scope, "PermissionsBoundary", boundary_arn)
        )


def emit_metadata(stack: cdk.Stack, metadata: dict[str, str]) -> cdk.CfnOutput:
    """The ``metadata`` output that ``seedfarmer metadata convert`` turns into module metadata."""
    return cdk.CfnOutput(stack, "metadata", value=stack.to_json_string(metadata))


def import_cluster(
    scope: Construct,
    *,
    cluster_name: str,
    admin_role_arn: str,
    oidc_provider_arn: str,
    endpoint: str,
    certificate_authority: str,
    handler_role_arn: str | None = None,
) -> eks.ICluster:
    """The existing cluster, with kubectl (the layer) so manifests and Helm charts can be applied.

    ``admin_role_arn`` is the role the kubectl handler assumes (mapped to cluster admin);
    ``handler_role_arn``, when given, is the handler Lambda's own execution role.
    """
    handler_role = (
        iam.Role.from_role_arn(scope, "KubectlHandlerRole", handler_role_arn, mutable=False)
        if handler_role_arn
        else None
    )
    return eks.Cluster.from_cluster_attributes(
        scope,
        "Cluster",
        cluster_name=cluster_name,
        cluster_endpoint=endpoint,
        cluster_certificate_authority_data=certificate_authority,
        kubectl_role_arn=admin_role_arn,
        kubectl_lambda_role=handler_role,
        kubectl_layer=KubectlV31Layer(scope, "KubectlLayer"),
        open_id_connect_provider=iam.OpenIdConnectProvider.from_open_id_connect_provider_arn(
            scope, "OidcProvider", oidc_provider_arn
        ),
    )


def data_bucket_statements(bucket_name: str) -> list[iam.PolicyStatement]:
    """Read and write objects in one bucket, list only that bucket: what the jobs need for S3."""
    bucket_arn = f"arn:{cdk.Aws.PARTITION}:s3:::{bucket_name}"
    return [
        iam.PolicyStatement(
            sid="ListDataBucket",
            actions=["s3:GetBucketLocation", "s3:ListBucket"],
            resources=[bucket_arn],
        ),
        iam.PolicyStatement(
            sid="ReadWriteDataBucketObjects",
            actions=["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
            resources=[f"{bucket_arn}/*"],
        ),
    ]


class IrsaServiceAccount(Construct):
    """A Kubernetes ServiceAccount bound to an IAM role that only that ServiceAccount can assume.

    The role trusts the cluster's OIDC provider for exactly ``system:serviceaccount:NS:NAME`` with
    audience ``sts.amazonaws.com``; it may use ``bucket_name`` when one is given, and nothing else.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        oidc_provider_arn: str,
        oidc_issuer: str,
        namespace: str,
        name: str,
        bucket_name: str | None,
        description: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.name = name
        self.namespace = namespace
        inline_policies = (
            {"DataBucket": iam.PolicyDocument(statements=data_bucket_statements(bucket_name))}
            if bucket_name
            else None
        )
        self.role = iam.Role(
            self,
            "Role",
            description=description,
            assumed_by=iam.FederatedPrincipal(
                oidc_provider_arn,
                conditions={
                    "StringEquals": {
                        f"{oidc_issuer}:sub": f"system:serviceaccount:{namespace}:{name}",
                        f"{oidc_issuer}:aud": "sts.amazonaws.com",
                    }
                },
                assume_role_action="sts:AssumeRoleWithWebIdentity",
            ),
            inline_policies=inline_policies,
        )
        manifest: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "seedfarmer"},
                "annotations": {"eks.amazonaws.com/role-arn": self.role.role_arn},
            },
        }
        self.manifest = eks.KubernetesManifest(
            self, "Manifest", cluster=cluster, manifest=[manifest], overwrite=False
        )
