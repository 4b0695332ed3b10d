"""Constructs both modules build the same way: cluster, kubectl handler, IRSA, image repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_eks as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import region_info
from aws_cdk.lambda_layer_kubectl_v31 import KubectlV31Layer
from constructs import Construct

from common.image import image_tag
from common.parameters import ModuleContext

#: Images kept in a module's repository; older ones expire (a rollback needs the previous few).
KEPT_IMAGES = 10
#: Layers of an interrupted push, never tagged, go after a day.
UNTAGGED_DAYS = 1

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
    handler_role: iam.IRole | None = None,
) -> eks.ICluster:
    """The existing cluster, with kubectl (the layer) so manifests and Helm charts can be applied.

    ``admin_role_arn`` is the role the kubectl handler assumes (mapped to cluster admin);
    ``handler_role``, when given, is the handler Lambda's own execution role.
    """
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


class KubectlHandlerRole(Construct):
    """The execution role of CDK's kubectl handler Lambda, with what it does here and no more.

    The role CDK would make may read every object of the CDK asset bucket (``Asset.grantRead``
    grants the whole bucket); this one reads only the assets given to :meth:`read`. The cluster
    gets :attr:`for_cluster`, which ignores CDK's own grants, so every right is written here:
    find the cluster, assume the admin role, write its logs.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster_name: str, admin_role_arn: str
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            description=f"CDK kubectl handler for {cluster_name}",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AWSLambdaBasicExecutionRole"
                )
            ],
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DescribeTheCluster",
                actions=["eks:DescribeCluster"],
                resources=[
                    stack.format_arn(service="eks", resource="cluster", resource_name=cluster_name)
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="AssumeTheClusterAdminRole",
                actions=["sts:AssumeRole"],
                resources=[admin_role_arn],
            )
        )
        self.for_cluster = self.role.without_policy_updates()

    def read(self, asset: s3_assets.Asset) -> None:
        """Let the handler download ``asset`` (a chart zip), that one object only."""
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    f"arn:{cdk.Aws.PARTITION}:s3:::{asset.s3_bucket_name}/{asset.s3_object_key}"
                ],
            )
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


def repository_uri(account: str, region: str, repository_name: str) -> str:
    """``<account>.dkr.ecr.<region>.<suffix>/<name>`` (the suffix differs in China regions)."""
    suffix = region_info.RegionInfo.get(region).domain_suffix or "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}/{repository_name}"


class ImageRepositoryStack(cdk.Stack):
    """The module's ECR repository; its outputs tell the deployspec where to push which tag.

    Emptied and deleted with the stack, so a destroy followed by a deploy with the same names
    finds no leftover repository in the way.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repository_name: str,
        tag: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.repository = ecr.Repository(
            self,
            "Repository",
            repository_name=repository_name,
            image_scan_on_push=True,
            # A tag is a content hash: it never moves to other content.
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            removal_policy=cdk.RemovalPolicy.DESTROY,
            empty_on_delete=True,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    rule_priority=1,
                    description="layers of interrupted pushes",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_age=cdk.Duration.days(UNTAGGED_DAYS),
                ),
                ecr.LifecycleRule(
                    rule_priority=2,
                    description=f"keep the newest {KEPT_IMAGES} images",
                    tag_status=ecr.TagStatus.ANY,
                    max_image_count=KEPT_IMAGES,
                ),
            ],
        )
        self.image_uri = f"{repository_uri(self.account, self.region, repository_name)}:{tag}"
        cdk.CfnOutput(self, "RepositoryName", value=repository_name)
        cdk.CfnOutput(self, "ImageUri", value=self.image_uri)


def module_image(
    app: cdk.App, context: ModuleContext, root: Path, given: str | None, tags: dict[str, str]
) -> tuple[str, ImageRepositoryStack | None]:
    """The image a module runs: ``given``, else the project's, built into the module's repository.

    The repository's stack (``<stack>-image``) is returned so the module's stack can depend on it;
    the image URI is spelled out from account and region (no cross-stack export to pin them).
    """
    if given:
        return given, None
    if not context.account or not context.region:
        raise SystemExit(
            "CDK_DEFAULT_ACCOUNT and CDK_DEFAULT_REGION are not set: run app.py through cdk (as"
            " the deployspec does), or set them, to name the module's image repository"
        )
    stack = ImageRepositoryStack(
        app,
        f"{context.stack_name}-image",
        repository_name=context.repository_name,
        tag=image_tag(root),
        env=cdk.Environment(account=context.account, region=context.region),
        description=f"Image repository of {context.stack_name} (the project's Dockerfile)",
    )
    apply_tags(stack, context, tags)
    return stack.image_uri, stack
