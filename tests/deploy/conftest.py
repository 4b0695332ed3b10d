"""Synthesized stacks of the SeedFarmer modules, shared by the deploy tests (synths: ~3 s each)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ray_operator.localkube.control_plane import LocalControlPlane

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_DIR = ROOT / "deploy" / "aws" / "modules" / "ray-operator"
ORCHESTRATOR_DIR = ROOT / "deploy" / "aws" / "modules" / "ray-orchestrator"
REAL_CHART = ROOT / "charts" / "ray-operator"
for _path in (ORCHESTRATOR_DIR, OPERATOR_DIR, ROOT / "deploy" / "aws"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

ACCOUNT = "123456789012"
REGION = "us-east-1"
ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/ABC123"
OIDC_ARN = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER}"
ADMIN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/eks-admin"
HANDLER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/eks-handler"
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/project-boundary"
#: The variable SeedFarmer sets for a deployment's permissionsBoundaryName (seed-farmer:
#: seedfarmer/deployment/deploy_base.py, DeployModule._env_vars).
BOUNDARY_ENV = "SEEDFARMER_PERMISSIONS_BOUNDARY_ARN"
BUCKET = "ml-data-bucket"
TAGS = {"team": "ml", "cost-center": "42"}


def seedfarmer_env(module: str, parameters: dict[str, str], **extra: str) -> dict[str, str]:
    """What SeedFarmer gives a module: its names, the account, ``SEEDFARMER_PARAMETER_*``."""
    env = {
        "SEEDFARMER_PROJECT_NAME": "idf",
        "SEEDFARMER_DEPLOYMENT_NAME": "dev",
        "SEEDFARMER_MODULE_NAME": module,
        "CDK_DEFAULT_ACCOUNT": ACCOUNT,
        "CDK_DEFAULT_REGION": REGION,
        **extra,
    }
    env.update({f"SEEDFARMER_PARAMETER_{k.upper()}": v for k, v in parameters.items()})
    return env


def operator_parameters() -> dict[str, str]:
    """The required parameters of ray-operator, as the sample manifest fills them in."""
    return {
        "eks_cluster_name": "eks-dev",
        "eks_cluster_admin_role_arn": ADMIN_ROLE,
        "eks_oidc_arn": OIDC_ARN,
        "eks_openid_issuer": f"https://{ISSUER}",
        "eks_cluster_endpoint": "https://ABC123.gr7.us-east-1.eks.amazonaws.com",
        "eks_cert_auth_data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t",
        "namespace": "ray",
    }


def orchestrator_parameters() -> dict[str, str]:
    """The required parameters of ray-orchestrator."""
    required = operator_parameters()
    del required["eks_openid_issuer"]
    return {**required, "eks_handler_role_arn": HANDLER_ROLE}


@dataclass
class Synth:
    """One synthesized app: the module's stack, its template, the nested (kubectl provider)
    templates and, when the module builds the image, its repository stack's template."""

    stack: Any
    template: dict[str, Any]
    nested: list[dict[str, Any]]
    directory: Path
    template_files: list[Path] = field(default_factory=list)
    image: dict[str, Any] | None = None

    def all_templates(self) -> list[dict[str, Any]]:
        return [self.template, *self.nested, *([self.image] if self.image else [])]

    def resources(self, type_: str, *, nested: bool = False) -> dict[str, dict[str, Any]]:
        templates = self.all_templates() if nested else [self.template]
        return {
            name: resource
            for template in templates
            for name, resource in template["Resources"].items()
            if resource["Type"] == type_
        }

    def one(self, type_: str) -> dict[str, Any]:
        found = self.resources(type_)
        assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
        return next(iter(found.values()))


def synthesize(build: Any, outdir: Path) -> Synth:
    """Build the app (with the AWS Solutions checks, as ``app.py`` does) and synthesize it once.

    ``build(app)`` returns the module's stack and its image repository stack (or None).
    """
    import aws_cdk as cdk
    from common.nag import add_aws_solutions_checks

    app = cdk.App(outdir=str(outdir))
    stack, repository = build(app)
    add_aws_solutions_checks(app)
    assembly = app.synth()
    artifact = assembly.get_stack_artifact(stack.artifact_id)
    files = [Path(assembly.directory) / artifact.template_file]
    files += sorted(Path(assembly.directory).glob("*.nested.template.json"))
    nested = [json.loads(path.read_text()) for path in files[1:]]
    image = None
    if repository is not None:
        image_artifact = assembly.get_stack_artifact(repository.artifact_id)
        image = image_artifact.template
        files.append(Path(assembly.directory) / image_artifact.template_file)
    return Synth(stack, artifact.template, nested, Path(assembly.directory), files, image)


def stub_chart(directory: Path) -> Path:
    """A minimal chart used only while ``charts/ray-operator`` has not landed yet."""
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text("apiVersion: v2\nname: ray-operator\nversion: 0.1.0\n")
    return directory


@pytest.fixture(scope="session")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (REAL_CHART / "Chart.yaml").is_file():
        return REAL_CHART
    return stub_chart(tmp_path_factory.mktemp("chart") / "ray-operator")


def synth_operator(env: dict[str, str], chart: Path, outdir: Path) -> Synth:
    """ray-operator as ``app.py`` builds it from ``env``."""
    from operator_settings import OperatorSettings
    from operator_stack import build_app

    settings = OperatorSettings.from_env(env)
    return synthesize(lambda app: build_app(app, settings, root=ROOT, chart_dir=chart), outdir)


def synth_orchestrator(env: dict[str, str], outdir: Path) -> Synth:
    """ray-orchestrator as ``app.py`` builds it from ``env``."""
    from orchestrator_settings import OrchestratorSettings
    from orchestrator_stack import build_app

    settings = OrchestratorSettings.from_env(ROOT, env)
    return synthesize(lambda app: build_app(app, settings, root=ROOT), outdir)


@pytest.fixture(scope="session")
def operator_full(chart_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """ray-operator with every optional parameter but operator_image, and a boundary."""
    parameters = {
        **operator_parameters(),
        "data_bucket_name": BUCKET,
        "tags": json.dumps(TAGS),
    }
    env = seedfarmer_env("ray-operator", parameters, **{BOUNDARY_ENV: BOUNDARY})
    return synth_operator(env, chart_dir, tmp_path_factory.mktemp("operator-full"))


@pytest.fixture(scope="session")
def operator_minimal(chart_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """ray-operator with the required parameters only."""
    env = seedfarmer_env("ray-operator", operator_parameters())
    return synth_operator(env, chart_dir, tmp_path_factory.mktemp("operator-minimal"))


@pytest.fixture(scope="session")
def orchestrator_full(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """ray-orchestrator with a bucket, a PVC, tags and a boundary, on a cluster with access
    entries."""
    parameters = {
        **orchestrator_parameters(),
        "data_bucket_name": BUCKET,
        "pvc_name": "fsx-lustre-claim",
        "tags": json.dumps(TAGS),
    }
    env = seedfarmer_env(
        "ray-orchestrator",
        parameters,
        **{BOUNDARY_ENV: BOUNDARY, "EKS_AUTHENTICATION_MODE": "API_AND_CONFIG_MAP"},
    )
    return synth_orchestrator(env, tmp_path_factory.mktemp("orchestrator-full"))


@pytest.fixture(scope="session")
def orchestrator_aws_auth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """ray-orchestrator, required parameters only, on a cluster in CONFIG_MAP mode."""
    env = seedfarmer_env(
        "ray-orchestrator", orchestrator_parameters(), EKS_AUTHENTICATION_MODE="CONFIG_MAP"
    )
    return synth_orchestrator(env, tmp_path_factory.mktemp("orchestrator-aws-auth"))


def resolve_join(value: Any) -> str:
    """A template string with ``Fn::Join`` resolved and references shown as ``<Name.Attr>``."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(resolve_join(part) for part in parts)
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if "Ref" in value:
        return f"<{value['Ref']}>"
    raise AssertionError(f"unexpected intrinsic {value}")


def metadata_output(synth: Synth) -> dict[str, str]:
    """The module metadata SeedFarmer reads from the ``metadata`` output."""
    assert set(synth.template["Outputs"]) == {"metadata"}
    result: dict[str, str] = json.loads(
        resolve_join(synth.template["Outputs"]["metadata"]["Value"])
    )
    return result


def kubernetes_objects(synth: Synth) -> list[dict[str, Any]]:
    """Every Kubernetes object the stack applies with kubectl (manifests, not Helm)."""
    objects: list[dict[str, Any]] = []
    for resource in synth.resources("Custom::AWSCDK-EKS-KubernetesResource").values():
        objects += json.loads(resolve_join(resource["Properties"]["Manifest"]))
    return objects


def iam_statements(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every statement of every identity policy in ``template`` (inline and AWS::IAM::Policy)."""
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy":
            yield from properties["PolicyDocument"]["Statement"]
        if resource["Type"] == "AWS::IAM::Role":
            for policy in properties.get("Policies", []):
                yield from policy["PolicyDocument"]["Statement"]


@dataclass
class AwsAuthCluster:
    """The session's real apiserver, seen as an EKS cluster in ``CONFIG_MAP`` mode: its endpoint,
    its certificate authority (as EKS gives ``certificateAuthority.data``) and ``aws-auth``."""

    cp: LocalControlPlane

    @property
    def endpoint(self) -> str:
        return self.cp.server

    @property
    def ca_data(self) -> str:
        return base64.b64encode((self.cp.workdir / "certs" / "apiserver.crt").read_bytes()).decode()

    @property
    def token(self) -> str:
        """What ``aws eks get-token`` stands in for: an admin's bearer token."""
        return self.cp.token

    def config_map(self) -> dict[str, Any] | None:
        """``kube-system/aws-auth`` as it is now; None when there is none."""
        done = self.cp.run_kubectl(
            "get", "configmap", "aws-auth", "-n", "kube-system", "-o", "json", check=False
        )
        if done.returncode != 0:
            assert "NotFound" in done.stderr, done.stderr
            return None
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def reset(self, config_map: dict[str, Any] | None) -> None:
        """Make ``aws-auth`` this (or absent)."""
        self.cp.run_kubectl(
            "delete", "configmap", "aws-auth", "-n", "kube-system", "--ignore-not-found"
        )
        if config_map is not None:
            subprocess.run(
                [str(self.cp.kubectl), "create", "-f", "-"],
                input=json.dumps(config_map), env=self.cp.kubectl_env(),
                capture_output=True, text=True, check=True,
            )


@pytest.fixture
def aws_auth_cluster(control_plane: LocalControlPlane) -> Iterator[AwsAuthCluster]:
    """The real apiserver with no ``aws-auth`` to begin with (and none left after)."""
    cluster = AwsAuthCluster(control_plane)
    cluster.reset(None)
    yield cluster
    cluster.reset(None)
