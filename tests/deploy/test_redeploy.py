"""Destroy then deploy again, and two deployments side by side: no named resource in the way.

A resource with a physical name that CloudFormation keeps after a destroy (``Retain``, or an ECR
repository that still holds images) makes the next deploy with the same parameters fail with
"already exists"; two deployments whose resources get the same names fail the same way. Both are
read from the synthesized templates of each module, for deployments ``dev`` and ``prod``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import (
    Synth,
    operator_parameters,
    orchestrator_parameters,
    seedfarmer_env,
    synth_operator,
    synth_orchestrator,
)

# Properties that give a resource its physical name, by resource type.
NAME_PROPERTIES = {
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::ECR::Repository": "RepositoryName",
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::S3::Bucket": "BucketName",
}


def named(synth: Synth) -> dict[tuple[str, str], dict[str, Any]]:
    """(type, physical name) -> resource, for every resource that sets its own name."""
    found = {}
    for template in synth.all_templates():
        for resource in template["Resources"].values():
            prop = NAME_PROPERTIES.get(resource["Type"])
            value = (resource.get("Properties") or {}).get(prop) if prop else None
            if value is not None:
                found[(resource["Type"], repr(value))] = resource
    return found


def synth(module: str, deployment: str, chart: Path, outdir: Path) -> Synth:
    env = seedfarmer_env(
        module,
        operator_parameters() if module == "ray-operator" else orchestrator_parameters(),
        SEEDFARMER_DEPLOYMENT_NAME=deployment,
        EKS_AUTHENTICATION_MODE="API_AND_CONFIG_MAP",  # what the deployspec reads from EKS
    )
    if module == "ray-operator":
        return synth_operator(env, chart, outdir)
    return synth_orchestrator(env, outdir)


@pytest.mark.parametrize("module", ["ray-operator", "ray-orchestrator"])
def test_a_destroy_leaves_no_named_resource_behind(
    module: str, chart_dir: Path, tmp_path: Path
) -> None:
    resources = named(synth(module, "dev", chart_dir, tmp_path / "dev"))
    assert resources, "the module names some of its resources (or this test checks nothing)"
    for (kind, name), resource in resources.items():
        assert resource.get("DeletionPolicy", "Delete") == "Delete", (kind, name)
        if kind == "AWS::ECR::Repository":  # CloudFormation deletes only an empty repository
            assert resource["Properties"].get("EmptyOnDelete") is True, name


@pytest.mark.parametrize("module", ["ray-operator", "ray-orchestrator"])
def test_two_deployments_share_no_name(
    module: str, chart_dir: Path, tmp_path: Path
) -> None:
    dev = named(synth(module, "dev", chart_dir, tmp_path / "dev"))
    prod = named(synth(module, "prod", chart_dir, tmp_path / "prod"))
    assert set(dev) and not set(dev) & set(prod), set(dev) & set(prod)
