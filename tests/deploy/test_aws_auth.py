"""aws_auth.py: the state machine's role in and out of aws-auth, nothing else touched.

Against the real apiserver of the test session; only ``aws eks get-token`` has a stand-in (it
needs AWS), which hands out the apiserver's admin token.
"""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from common import aws_auth
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.deploy.conftest import AwsAuthCluster

ROLE = "arn:aws:iam::123456789012:role/idf-dev-ray-orchestrator-StateMachineRole-X"
NODES = {
    "rolearn": "arn:aws:iam::123456789012:role/nodes",
    "username": "system:node:{{EC2PrivateDNSName}}",
    "groups": ["system:bootstrappers", "system:nodes"],
}
GROUP = "idf-dev-ray-orchestrator-step-functions"
METADATA = {
    "EksAccessMode": "aws_auth",
    "StateMachineRoleArn": ROLE,
    "KubernetesUsername": GROUP,
    "KubernetesGroup": GROUP,
}


def aws_auth_map(*entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "aws-auth", "namespace": "kube-system"},
        "data": {"mapRoles": yaml.safe_dump(list(entries)), "mapUsers": "[]\n"},
    }


def roles_of(config_map: dict[str, Any] | None) -> list[dict[str, Any]]:
    assert config_map is not None
    found: list[dict[str, Any]] = yaml.safe_load(config_map["data"]["mapRoles"] or "[]") or []
    return found


def env_for(cluster: AwsAuthCluster) -> dict[str, str]:
    return {
        "SEEDFARMER_PARAMETER_EKS_CLUSTER_NAME": "eks-dev",
        "SEEDFARMER_PARAMETER_EKS_CLUSTER_ENDPOINT": cluster.endpoint,
        "SEEDFARMER_PARAMETER_EKS_CERT_AUTH_DATA": cluster.ca_data,
        "SEEDFARMER_PARAMETER_EKS_CLUSTER_ADMIN_ROLE_ARN": "arn:aws:iam::123456789012:role/admin",
    }


@pytest.fixture
def signed_as_admin(
    monkeypatch: pytest.MonkeyPatch, aws_auth_cluster: AwsAuthCluster
) -> list[tuple[str, str]]:
    """``aws eks get-token`` stand-in: records for which cluster and role a token was asked."""
    asked: list[tuple[str, str]] = []

    def token(cluster: str, role: str) -> str:
        asked.append((cluster, role))
        return aws_auth_cluster.token

    monkeypatch.setattr(aws_auth, "token", token)
    return asked


def version(cluster: AwsAuthCluster) -> str:
    config_map = cluster.config_map()
    assert config_map is not None
    value: str = config_map["metadata"]["resourceVersion"]
    return value


def test_map_adds_only_its_role_and_keeps_the_nodes(
    tmp_path: Path, signed_as_admin: list[tuple[str, str]], aws_auth_cluster: AwsAuthCluster
) -> None:
    """As the deployspec runs it after cdk deploy: the metadata from the outputs file."""
    outputs = tmp_path / "cdk-exports.json"
    outputs.write_text(json.dumps({"idf-dev-ray-orchestrator": {"metadata": json.dumps(METADATA)}}))
    aws_auth_cluster.reset(aws_auth_map(NODES))
    argv = ["map", "--outputs", str(outputs), "--stack", "idf-dev-ray-orchestrator"]
    assert aws_auth.main(argv, env_for(aws_auth_cluster)) == 0
    config_map = aws_auth_cluster.config_map()
    assert roles_of(config_map) == [NODES, {"rolearn": ROLE, "username": GROUP, "groups": [GROUP]}]
    assert config_map is not None and config_map["data"]["mapUsers"] == "[]\n"  # untouched
    # Mapping again changes nothing and writes nothing.
    before = version(aws_auth_cluster)
    assert aws_auth.main(argv, env_for(aws_auth_cluster)) == 0
    assert version(aws_auth_cluster) == before
    assert signed_as_admin[0] == ("eks-dev", "arn:aws:iam::123456789012:role/admin")


def test_unmap_on_destroy_reads_seedfarmer_metadata_and_removes_only_its_role(
    signed_as_admin: list[tuple[str, str]], aws_auth_cluster: AwsAuthCluster
) -> None:
    mine = {"rolearn": ROLE, "username": GROUP, "groups": [GROUP]}
    aws_auth_cluster.reset(aws_auth_map(NODES, mine))
    env = {**env_for(aws_auth_cluster), "SEEDFARMER_MODULE_METADATA": json.dumps(METADATA)}
    assert aws_auth.main(["unmap"], env) == 0
    assert roles_of(aws_auth_cluster.config_map()) == [NODES]


class RacedApiServer(aws_auth.HttpApiServer):
    """Another writer changes aws-auth between each of the first ``races`` reads and writes."""

    def __init__(self, cluster: AwsAuthCluster, races: int) -> None:
        super().__init__(cluster.endpoint, cluster.ca_data, cluster.token)
        self.cluster, self.races, self.writes = cluster, races, 0

    def write(self, path: str, body: dict[str, Any], *, create: bool) -> None:
        self.writes += 1
        if self.races:
            self.races -= 1
            other = self.cluster.config_map()
            assert other is not None
            other["data"]["mapUsers"] = yaml.safe_dump([{"userarn": f"u{self.races}"}])
            super().write(path, other, create=False)
        super().write(path, body, create=create)


def test_concurrent_writer_is_retried_not_overwritten(aws_auth_cluster: AwsAuthCluster) -> None:
    aws_auth_cluster.reset(aws_auth_map(NODES))
    api = RacedApiServer(aws_auth_cluster, races=2)
    assert aws_auth.update(api, lambda roles: aws_auth.mapped(roles, ROLE, GROUP, [GROUP]))
    assert api.writes == 3  # refused twice by the apiserver (409), then written
    config_map = aws_auth_cluster.config_map()
    assert roles_of(config_map) == [NODES, {"rolearn": ROLE, "username": GROUP, "groups": [GROUP]}]
    assert config_map is not None
    assert yaml.safe_load(config_map["data"]["mapUsers"]) == [{"userarn": "u0"}]  # theirs kept


def test_nothing_to_remove_writes_nothing(
    signed_as_admin: list[tuple[str, str]], aws_auth_cluster: AwsAuthCluster
) -> None:
    aws_auth_cluster.reset(aws_auth_map(NODES))
    before = version(aws_auth_cluster)
    env = {**env_for(aws_auth_cluster), "SEEDFARMER_MODULE_METADATA": json.dumps(METADATA)}
    assert aws_auth.main(["unmap"], env) == 0
    assert version(aws_auth_cluster) == before


def test_a_missing_aws_auth_is_created_with_the_role(aws_auth_cluster: AwsAuthCluster) -> None:
    api = aws_auth.HttpApiServer(
        aws_auth_cluster.endpoint, aws_auth_cluster.ca_data, aws_auth_cluster.token
    )
    assert aws_auth.update(api, lambda roles: aws_auth.mapped(roles, ROLE, GROUP, [GROUP]))
    assert roles_of(aws_auth_cluster.config_map()) == [
        {"rolearn": ROLE, "username": GROUP, "groups": [GROUP]}
    ]


def test_access_entry_mode_touches_nothing(signed_as_admin: list[tuple[str, str]]) -> None:
    env = {"SEEDFARMER_MODULE_METADATA": json.dumps({**METADATA, "EksAccessMode": "access_entry"})}
    assert aws_auth.main(["unmap"], env) == 0
    assert signed_as_admin == []  # no token asked, no cluster contacted


def test_the_server_certificate_is_checked(aws_auth_cluster: AwsAuthCluster) -> None:
    """A certificate authority other than the cluster's is refused."""
    other_ca = base64.b64encode(self_signed_certificate()).decode()
    api = aws_auth.HttpApiServer(aws_auth_cluster.endpoint, other_ca, aws_auth_cluster.token)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        api.get(aws_auth.PATH)


def self_signed_certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone-else")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_a_malformed_map_roles_is_left_alone() -> None:
    with pytest.raises(ValueError, match="left unchanged"):
        aws_auth.mapped("rolearn: not-a-list", ROLE, GROUP, [GROUP])
