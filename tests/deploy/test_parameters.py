"""Module parameters: names, defaults, and bad values failing before synthesis, named."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from common.parameters import ParameterError, env_name, manifest_name
from operator_settings import OperatorSettings
from orchestrator_settings import OrchestratorSettings

from tests.deploy.conftest import (
    OPERATOR_DIR,
    ORCHESTRATOR_DIR,
    ROOT,
    operator_parameters,
    orchestrator_parameters,
    seedfarmer_env,
)

OPERATOR_REQUIRED = sorted(operator_parameters())
ORCHESTRATOR_REQUIRED = sorted(orchestrator_parameters())


def operator(**changes: str | None) -> OperatorSettings:
    parameters = {**operator_parameters(), **changes}
    env = seedfarmer_env("ray-operator", {k: v for k, v in parameters.items() if v is not None})
    return OperatorSettings.from_env(env)


def orchestrator(mode: str = "API", **changes: str | None) -> OrchestratorSettings:
    """Settings from the sample parameters; ``mode`` is the cluster's authentication mode."""
    parameters = {**orchestrator_parameters(), **changes}
    env = seedfarmer_env(
        "ray-orchestrator",
        {k: v for k, v in parameters.items() if v is not None},
        EKS_AUTHENTICATION_MODE=mode,
    )
    return OrchestratorSettings.from_env(ROOT, env)


def test_names_follow_seedfarmer() -> None:
    assert env_name("eks_oidc_arn") == "SEEDFARMER_PARAMETER_EKS_OIDC_ARN"
    assert manifest_name("eks_cluster_admin_role_arn") == "EksClusterAdminRoleArn"
    assert manifest_name("dra_export_path") == "DraExportPath"


def test_orchestrator_defaults_are_the_originals() -> None:
    settings = orchestrator()
    assert settings.step_function_timeout == 360
    assert settings.timeout_seconds == 21600
    assert settings.dra_export_path == "/ray/export/"
    assert settings.pvc_name is None and settings.data_bucket_name is None
    assert settings.tags == {}
    assert settings.pipeline.name == "train-inference"


def test_tags_as_object_or_list() -> None:
    assert operator(tags='{"team": "ml", "n": 1}').tags == {"team": "ml", "n": "1"}
    assert operator(tags='[{"Key": "team", "Value": "ml"}]').tags == {"team": "ml"}


@pytest.mark.parametrize("missing", OPERATOR_REQUIRED)
def test_operator_missing_required_parameter_is_named(missing: str) -> None:
    with pytest.raises(ParameterError) as error:
        operator(**{missing: None})
    assert f"{missing} ({manifest_name(missing)}, env {env_name(missing)}): is required" in str(
        error.value
    )


@pytest.mark.parametrize("missing", ORCHESTRATOR_REQUIRED)
def test_orchestrator_missing_required_parameter_is_named(missing: str) -> None:
    with pytest.raises(ParameterError) as error:
        orchestrator(**{missing: None})
    assert f"{missing} ({manifest_name(missing)}" in str(error.value)
    assert "is required" in str(error.value)


@pytest.mark.parametrize(
    ("parameter", "value", "expected"),
    [
        ("eks_cluster_admin_role_arn", "eks-admin", "an IAM role ARN"),
        ("eks_handler_role_arn", "arn:aws:s3:::bucket", "an IAM role ARN"),
        ("eks_oidc_arn", "oidc.eks.us-east-1.amazonaws.com/id/X", "an IAM OIDC provider ARN"),
        ("dra_export_path", "ray/export/", "an absolute path that starts with '/'"),
        ("step_function_timeout", "0", "a positive number of minutes"),
        ("step_function_timeout", "-5", "a positive number of minutes"),
        ("step_function_timeout", "six hours", "a positive number of minutes"),
        ("step_function_timeout", "nan", "a positive number of minutes"),
        ("namespace", "Ray_NS", "a Kubernetes namespace name"),
        ("data_bucket_name", "My_Bucket", "an S3 bucket name"),
        ("eks_cluster_endpoint", "http://plain", "an https:// URL"),
        ("tags", "team=ml", "a JSON object"),
        ("tags", '{"aws:owner": "x"}', "not starting with 'aws:'"),
    ],
)
def test_bad_value_is_named_with_what_is_accepted(
    parameter: str, value: str, expected: str
) -> None:
    with pytest.raises(ParameterError) as error:
        orchestrator(**{parameter: value})
    (problem,) = error.value.problems
    assert problem.startswith(
        f"{parameter} ({manifest_name(parameter)}, env {env_name(parameter)})"
    )
    assert repr(value) in problem and expected in problem


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ParameterError) as error:
        orchestrator(namespace=None, step_function_timeout="0", dra_export_path="x")
    assert [p.split(" ", 1)[0] for p in error.value.problems] == [
        "namespace",
        "step_function_timeout",
        "dra_export_path",
    ]


def test_issuer_must_match_the_oidc_provider() -> None:
    with pytest.raises(ParameterError, match=r"eks_openid_issuer \(EksOpenidIssuer"):
        operator(eks_openid_issuer="https://oidc.eks.us-east-1.amazonaws.com/id/OTHER")


def test_broken_pipeline_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("spec:\n  steps: []\n  exportPath: relative\n")
    with pytest.raises(ParameterError) as error:
        orchestrator(pipeline_file=str(bad))
    assert error.value.problems[0].startswith("pipeline_file (PipelineFile")


def test_bad_permissions_boundary_is_named() -> None:
    env = seedfarmer_env(
        "ray-operator", operator_parameters(), SEEDFARMER_PERMISSIONS_BOUNDARY_ARN="boundary"
    )
    with pytest.raises(ParameterError, match="SEEDFARMER_PERMISSIONS_BOUNDARY_ARN: 'boundary'"):
        OperatorSettings.from_env(env)


def test_permissions_boundary_from_the_variable_seedfarmer_sets() -> None:
    boundary = "arn:aws:iam::123456789012:policy/b"
    env = seedfarmer_env(
        "ray-operator", operator_parameters(), SEEDFARMER_PERMISSIONS_BOUNDARY_ARN=boundary
    )
    assert OperatorSettings.from_env(env).context.permissions_boundary_arn == boundary


@pytest.mark.parametrize(
    ("authentication_mode", "access_mode"),
    [
        ("API", "access_entry"),
        ("API_AND_CONFIG_MAP", "access_entry"),
        ("CONFIG_MAP", "aws_auth"),
        ("None", "aws_auth"),  # describe-cluster of a cluster older than access entries
    ],
)
def test_access_mode_defaults_to_what_the_cluster_supports(
    authentication_mode: str, access_mode: str
) -> None:
    assert orchestrator(authentication_mode).eks_access_mode == access_mode


def test_access_mode_parameter_wins_and_is_checked() -> None:
    assert orchestrator("API", eks_access_mode="aws_auth").eks_access_mode == "aws_auth"
    assert orchestrator("CONFIG_MAP", eks_access_mode="access_entry").eks_access_mode == (
        "access_entry"
    )
    with pytest.raises(ParameterError, match="'configmap' is not valid: expected one of"):
        orchestrator(eks_access_mode="configmap")
    with pytest.raises(ParameterError, match=r"eks_access_mode \(EksAccessMode.*is not set"):
        orchestrator("")


@pytest.mark.parametrize(
    ("module_dir", "parameters"),
    [(OPERATOR_DIR, operator_parameters()), (ORCHESTRATOR_DIR, orchestrator_parameters())],
)
def test_app_exits_naming_the_parameter_before_synthesis(
    module_dir: Path, parameters: dict[str, str], tmp_path: Path
) -> None:
    parameters = {**parameters, "eks_cluster_admin_role_arn": "not-an-arn"}
    del parameters["namespace"]
    env = {
        **os.environ,
        **seedfarmer_env(module_dir.name, parameters, EKS_AUTHENTICATION_MODE="API"),
        "CDK_OUTDIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=module_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "namespace (Namespace, env SEEDFARMER_PARAMETER_NAMESPACE): is required" in done.stderr
    assert "eks_cluster_admin_role_arn (EksClusterAdminRoleArn" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing synthesized


@pytest.mark.parametrize(
    ("module_dir", "required", "optional"),
    [
        (OPERATOR_DIR, OPERATOR_REQUIRED, ["data_bucket_name", "tags", "operator_image"]),
        (
            ORCHESTRATOR_DIR,
            ORCHESTRATOR_REQUIRED,
            [
                "step_function_timeout",
                "data_bucket_name",
                "pvc_name",
                "dra_export_path",
                "tags",
                "pipeline_file",
                "runner_image",
                "eks_access_mode",
            ],
        ),
    ],
)
def test_readme_lists_every_parameter(
    module_dir: Path, required: list[str], optional: list[str]
) -> None:
    """The original README left out a required parameter: the lists must match the code."""
    text = (module_dir / "README.md").read_text()
    required_part = text.split("#### Required", 1)[1].split("#### Optional", 1)[0]
    optional_part = text.split("#### Optional", 1)[1].split("###", 1)[0]
    listed = re.compile(r"^- `([a-z_]+)`", re.MULTILINE)
    assert sorted(listed.findall(required_part)) == sorted(required)
    assert sorted(listed.findall(optional_part)) == sorted(optional)
