"""Parameters of the ray-operator module, validated before anything is synthesized."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.parameters import ModuleContext, ParameterReader

#: Helm release names must fit 53 characters (Helm's own limit).
RELEASE_NAME_MAX = 53
#: Suffix of the ServiceAccount of the Ray and runner pods (the one with the bucket's role).
RAY_SUFFIX = "-ray"
#: Suffix of the operator's own ServiceAccount (no IAM role).
OPERATOR_SUFFIX = "-controller"


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the ray-operator stack is built from."""

    context: ModuleContext
    eks_cluster_name: str
    eks_cluster_admin_role_arn: str
    eks_oidc_arn: str
    eks_openid_issuer: str
    eks_cluster_endpoint: str
    eks_cert_auth_data: str
    namespace: str
    data_bucket_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    operator_image: str | None = None

    @property
    def ray_service_account_name(self) -> str:
        """The Ray and RayJob runner pods' ServiceAccount: ``<project>-<deployment>-<module>-ray``.

        Bound by IRSA to the data bucket's role (output ``EksServiceAccountName``). Named after
        the deployment and module, so another deployment in the same namespace (or cluster)
        never takes over this one's IRSA role.
        """
        return self.context.kubernetes_name(63 - len(RAY_SUFFIX)) + RAY_SUFFIX

    @property
    def operator_service_account_name(self) -> str:
        """The operator's own ServiceAccount: ``<project>-<deployment>-<module>-controller``.

        The chart creates it, with no IAM role (output ``OperatorServiceAccountName``). Not the
        chart's default (the release name): that was the name of the IRSA account in earlier
        versions of this module, which Helm would refuse to take over on an update.
        """
        return self.context.kubernetes_name(63 - len(OPERATOR_SUFFIX)) + OPERATOR_SUFFIX

    @property
    def release_name(self) -> str:
        """The Helm release of the operator (the chart names its objects after it)."""
        return self.context.kubernetes_name(RELEASE_NAME_MAX)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        """Read ``SEEDFARMER_*`` variables; raise ``ParameterError`` naming every bad parameter."""
        reader = ParameterReader(os.environ if env is None else env)
        context = reader.context()
        oidc_arn, issuer_in_arn = reader.oidc_provider_arn("eks_oidc_arn")
        issuer = reader.openid_issuer("eks_openid_issuer")
        if issuer and issuer_in_arn and issuer != issuer_in_arn:
            # The role's trust condition would name one provider and the principal another.
            reader.problem(
                "eks_openid_issuer",
                f"{issuer!r} is not the issuer of eks_oidc_arn ({issuer_in_arn!r});"
                " give the issuer of the same cluster",
            )
        settings = cls(
            context=context,
            eks_cluster_name=reader.cluster_name("eks_cluster_name"),
            eks_cluster_admin_role_arn=reader.role_arn("eks_cluster_admin_role_arn"),
            eks_oidc_arn=oidc_arn,
            eks_openid_issuer=issuer,
            eks_cluster_endpoint=reader.https_url("eks_cluster_endpoint"),
            eks_cert_auth_data=reader.base64("eks_cert_auth_data"),
            namespace=reader.namespace("namespace"),
            data_bucket_name=reader.bucket_name("data_bucket_name"),
            tags=reader.tags("tags"),
            operator_image=reader.image("operator_image"),
        )
        reader.check()
        return settings
