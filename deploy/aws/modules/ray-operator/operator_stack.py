"""The ray-operator stack on EKS: namespace, this project's chart, the Ray pods' IRSA account."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_eks as eks
from aws_cdk import aws_s3_assets as s3_assets
from common.image import split_image
from common.nag import acknowledge, acknowledge_kubectl_provider
from common.resources import (
    IrsaServiceAccount,
    KubectlHandlerRole,
    apply_permissions_boundary,
    apply_tags,
    emit_metadata,
    import_cluster,
    module_image,
)
from constructs import Construct
from operator_settings import OperatorSettings


def chart_values(settings: OperatorSettings, image: str) -> dict[str, Any]:
    """Values for ``charts/ray-operator``: watch only the module's namespace, with namespaced RBAC.

    The chart creates the operator's ServiceAccount (bound to its Role, no annotations, so no IAM
    role: the operator itself never calls AWS). It is named by the stack rather than after the
    release, which was the name of the IRSA account in earlier versions of this module. ``image``
    is the operator's, which the chart also gives RayJob runner pods.
    """
    repository, tag = split_image(image)
    return {
        "image": {"repository": repository, "tag": tag},
        "watchNamespaces": [settings.namespace],
        "rbac": {"clusterWide": False},
        "serviceAccount": {"create": True, "name": settings.operator_service_account_name},
    }


class RayOperatorStack(cdk.Stack):
    """Installs the operator into a namespace it creates; an IRSA service account for its pods.

    The operator runs as the chart's own ServiceAccount, with no IAM role. The data bucket's role
    is bound to a second ServiceAccount, :attr:`ray_service_account`, which the Ray head and worker
    pods (``serviceAccountName`` in their templates) and RayJob runner pods
    (``spec.serviceAccountName``) name.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: OperatorSettings,
        chart_dir: Path,
        image: str,
        repository_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        apply_tags(self, settings.context, settings.tags)
        apply_permissions_boundary(self, settings.context.permissions_boundary_arn)

        handler = KubectlHandlerRole(
            self,
            "KubectlHandler",
            cluster_name=settings.eks_cluster_name,
            admin_role_arn=settings.eks_cluster_admin_role_arn,
        )
        cluster = import_cluster(
            self,
            cluster_name=settings.eks_cluster_name,
            admin_role_arn=settings.eks_cluster_admin_role_arn,
            oidc_provider_arn=settings.eks_oidc_arn,
            endpoint=settings.eks_cluster_endpoint,
            certificate_authority=settings.eks_cert_auth_data,
            handler_role=handler.for_cluster,
        )

        # overwrite=False: never adopt (and later delete on destroy) a namespace someone else owns.
        namespace = eks.KubernetesManifest(
            self,
            "Namespace",
            cluster=cluster,
            overwrite=False,
            manifest=[
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": settings.namespace,
                        "labels": {"app.kubernetes.io/managed-by": "seedfarmer"},
                    },
                }
            ],
        )

        # Not the construct id of earlier versions ("ServiceAccount", the operator's IRSA account,
        # named like the release): as a new resource, an update creates this account and then
        # deletes that one. Renamed in place, the kubectl handler would only apply the new name
        # and leave the old account in the cluster.
        self.ray_service_account = IrsaServiceAccount(
            self,
            "RayServiceAccount",
            cluster=cluster,
            oidc_provider_arn=settings.eks_oidc_arn,
            oidc_issuer=settings.eks_openid_issuer,
            namespace=settings.namespace,
            name=settings.ray_service_account_name,
            bucket_name=settings.data_bucket_name,
            description=(
                f"Ray and RayJob runner pods in {settings.eks_cluster_name}/{settings.namespace}"
            ),
        )
        self.ray_service_account.manifest.node.add_dependency(namespace)

        chart_asset = s3_assets.Asset(self, "ChartAsset", path=str(chart_dir))
        handler.read(chart_asset)
        chart = eks.HelmChart(
            self,
            "Chart",
            cluster=cluster,
            chart_asset=chart_asset,
            release=settings.release_name,
            namespace=settings.namespace,
            create_namespace=False,
            values=chart_values(settings, image),
            wait=True,
            timeout=cdk.Duration.minutes(10),
        )
        chart.node.add_dependency(namespace)

        if settings.data_bucket_name:
            acknowledge(
                self.ray_service_account.role,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{settings.data_bucket_name}/*]",
                "object access is limited to the one data bucket given as data_bucket_name;"
                " the jobs choose the object keys",
            )
        acknowledge(
            handler.role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]",
            "the kubectl handler Lambda writes its own logs; its function name (and so its log"
            " group) is generated by CDK, so the managed logging policy is the scoped choice",
        )
        acknowledge_kubectl_provider(self, cluster)
        # Reported on this stack (the nested template's warnings surface at its parent).
        acknowledge(
            self,
            "CloudFormation-Validate::W8001",
            "CDK's kubectl provider template keeps its HasEcrPublic condition unused when the"
            " handler role is this stack's own (it pulls no charts from ECR Public)",
        )

        metadata = {
            # The account for the Ray and runner pods, and its role (the original module's keys).
            "EksServiceAccountName": settings.ray_service_account_name,
            "EksServiceAccountRoleArn": self.ray_service_account.role.role_arn,
            "OperatorServiceAccountName": settings.operator_service_account_name,
            "NamespaceName": settings.namespace,
            "ImageUri": image,
        }
        if repository_name:
            metadata["EcrRepositoryName"] = repository_name
        emit_metadata(self, metadata)


def build_app(
    app: cdk.App, settings: OperatorSettings, *, root: Path, chart_dir: Path
) -> tuple[RayOperatorStack, cdk.Stack | None]:
    """The module's stacks: its image repository (unless ``operator_image``), then the operator."""
    context = settings.context
    image, repository = module_image(app, context, root, settings.operator_image, settings.tags)
    stack = RayOperatorStack(
        app,
        context.stack_name,
        settings=settings,
        chart_dir=chart_dir,
        image=image,
        repository_name=context.repository_name if repository else None,
        env=cdk.Environment(account=context.account, region=context.region),
        description=(
            "Ray operator (this project's Helm chart) and an IRSA service account for Ray pods"
        ),
    )
    if repository is not None:
        # Deployed first (the image is pushed in between), destroyed last.
        stack.add_stack_dependency(repository)
    return stack, repository
