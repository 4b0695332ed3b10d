"""The ray-operator stack: namespace, IRSA service account and this project's Helm chart on EKS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_eks as eks
from aws_cdk import aws_s3_assets as s3_assets
from common.nag import acknowledge, acknowledge_kubectl_provider
from common.resources import (
    IrsaServiceAccount,
    apply_permissions_boundary,
    apply_tags,
    emit_metadata,
    import_cluster,
)
from constructs import Construct
from operator_settings import OperatorSettings

#: Helm release name of the operator.
RELEASE_NAME = "ray-operator"


def chart_values(settings: OperatorSettings) -> dict[str, Any]:
    """Values for ``charts/ray-operator``: watch only the module's namespace, with namespaced RBAC.

    The ServiceAccount is created by this stack (it carries the IAM role annotation), so the chart
    is told to use it rather than create its own.
    """
    values: dict[str, Any] = {
        "watchNamespaces": [settings.namespace],
        "rbac": {"clusterWide": False},
        "serviceAccount": {"create": False, "name": settings.service_account_name},
    }
    if settings.operator_image:
        repository, _, tag = settings.operator_image.rpartition(":")
        if not repository or "/" in tag:  # no tag: "registry:5000/name" has a ':' in the host
            repository, tag = settings.operator_image, "latest"
        values["image"] = {"repository": repository, "tag": tag}
    return values


class RayOperatorStack(cdk.Stack):
    """Installs the operator into a namespace it creates, running as an IRSA service account."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: OperatorSettings,
        chart_dir: Path,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        apply_tags(self, settings.context, settings.tags)
        apply_permissions_boundary(self, settings.context.permissions_boundary_arn)

        cluster = import_cluster(
            self,
            cluster_name=settings.eks_cluster_name,
            admin_role_arn=settings.eks_cluster_admin_role_arn,
            oidc_provider_arn=settings.eks_oidc_arn,
            endpoint=settings.eks_cluster_endpoint,
            certificate_authority=settings.eks_cert_auth_data,
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

        self.service_account = IrsaServiceAccount(
            self,
            "ServiceAccount",
            cluster=cluster,
            oidc_provider_arn=settings.eks_oidc_arn,
            oidc_issuer=settings.eks_openid_issuer,
            namespace=settings.namespace,
            name=settings.service_account_name,
            bucket_name=settings.data_bucket_name,
            description=f"Ray operator in {settings.eks_cluster_name}/{settings.namespace}",
        )
        self.service_account.manifest.node.add_dependency(namespace)

        chart = eks.HelmChart(
            self,
            "Chart",
            cluster=cluster,
            chart_asset=s3_assets.Asset(self, "ChartAsset", path=str(chart_dir)),
            release=RELEASE_NAME,
            namespace=settings.namespace,
            create_namespace=False,
            values=chart_values(settings),
            wait=True,
            timeout=cdk.Duration.minutes(10),
        )
        chart.node.add_dependency(self.service_account.manifest)

        if settings.data_bucket_name:
            acknowledge(
                self.service_account.role,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{settings.data_bucket_name}/*]",
                "object access is limited to the one data bucket given as data_bucket_name;"
                " the jobs choose the object keys",
            )
        acknowledge_kubectl_provider(self, cluster)

        emit_metadata(
            self,
            {
                "EksServiceAccountName": settings.service_account_name,
                "EksServiceAccountRoleArn": self.service_account.role.role_arn,
                "NamespaceName": settings.namespace,
            },
        )
