"""What holds for both modules: least privilege, boundary, tags, cdk-nag, cfn-lint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from cdk_nag import AwsSolutionsChecks
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from tests.deploy.conftest import (
    BOUNDARY,
    OPERATOR_DIR,
    ORCHESTRATOR_DIR,
    REGION,
    TAGS,
    Synth,
    iam_statements,
    metadata_output,
)

FULL = ["operator_full", "orchestrator_full"]
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")


@pytest.fixture(params=FULL)
def full(request: pytest.FixtureRequest) -> Synth:
    synth: Synth = request.getfixturevalue(request.param)
    return synth


@pytest.mark.parametrize(
    ("synth_name", "module_dir"),
    [("operator_full", OPERATOR_DIR), ("orchestrator_full", ORCHESTRATOR_DIR)],
)
def test_readme_lists_every_metadata_output(
    synth_name: str, module_dir: Path, request: pytest.FixtureRequest
) -> None:
    """The README's "Module Metadata Outputs" name exactly the keys of the metadata output (with
    every optional parameter but the image, so EcrRepositoryName is among them)."""
    synth: Synth = request.getfixturevalue(synth_name)
    text = (module_dir / "README.md").read_text()
    section = re.split(r"^#+ Module Metadata Outputs\n", text, flags=re.MULTILINE)[1]
    section = re.split(r"^#", section, maxsplit=1, flags=re.MULTILINE)[0]
    # Each key is followed by ":" (its description) or "," (several keys described at once).
    listed = set(re.findall(r"`([A-Z][A-Za-z]+)`(?=[:,])", section))
    assert listed == set(metadata_output(synth))


def test_no_wildcard_actions(full: Synth) -> None:
    for template in full.all_templates():
        for statement in iam_statements(template):
            actions = statement["Action"]
            for action in [actions] if isinstance(actions, str) else actions:
                assert action != "*" and not action.endswith(":*"), statement


def test_permissions_boundary_on_every_role(full: Synth) -> None:
    """Set as SeedFarmer sets it; every role of every template, CDK's own ones included."""
    roles = full.resources("AWS::IAM::Role", nested=True)
    # CDK's provider framework role lives in the kubectl provider's nested stack.
    assert any(name.startswith("ProviderframeworkonEvent") for name in roles), sorted(roles)
    for name, role in roles.items():
        assert role["Properties"].get("PermissionsBoundary") == BOUNDARY, name


@pytest.mark.parametrize("minimal", ["operator_minimal", "orchestrator_aws_auth"])
def test_no_permissions_boundary_when_none_given(
    minimal: str, request: pytest.FixtureRequest
) -> None:
    synth: Synth = request.getfixturevalue(minimal)
    roles = synth.resources("AWS::IAM::Role", nested=True)
    assert roles
    for role in roles.values():
        assert "PermissionsBoundary" not in role["Properties"]


def test_every_taggable_resource_is_tagged(full: Synth) -> None:
    """Taggable = the resource type's CloudFormation schema (from cfn-lint) has Tags."""
    checked = 0
    for template in full.all_templates():
        for name, resource in template["Resources"].items():
            if resource["Type"].startswith("Custom::"):
                continue  # CDK's kubectl/Helm custom resources take no tags
            schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(REGION, resource["Type"])
            if "Tags" not in schema.schema.get("properties", {}):
                continue
            tags = resource["Properties"].get("Tags")
            if isinstance(tags, dict):  # some types (e.g. none here) use a key-value map
                pairs = dict(tags)
            else:
                pairs = {tag["Key"]: tag["Value"] for tag in tags or []}
            expected = {"Deployment": full.stack.stack_name, **TAGS}
            assert pairs == expected, f"{name} ({resource['Type']})"
            checked += 1
    assert checked >= 5


def test_aws_solutions_checks_pass_with_justified_acknowledgements(full: Synth) -> None:
    report = AwsSolutionsChecks().validate_scope(full.stack)
    found = [
        (v.rule_name, [r.construct_path for r in v.violating_resources]) for v in report.violations
    ]
    assert report.success, found


def test_every_acknowledgement_gives_a_reason(full: Synth) -> None:
    import aws_cdk as cdk

    key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    acknowledged = {}
    for construct in full.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == key:
                acknowledged.update(entry.data)
    assert acknowledged
    for rule, reason in acknowledged.items():
        assert isinstance(reason, str) and len(reason) > 40, rule


#: cfn-lint warnings about template text CDK itself writes, and why they are harmless.
CDK_WARNINGS = {
    "W3005": "CDK adds DependsOn on a role that the resource also references with GetAtt",
    "W8001": "CDK's kubectl provider keeps HasEcrPublic unused when the handler role is given",
}


def cfn_lint_findings(files: list[Path]) -> list[str]:
    done = subprocess.run(
        [CFN_LINT, "--regions", REGION, "--format", "parseable", "--", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not done.stderr, done.stderr
    # parseable: file:line:col:line:col:RULE:message
    return [line for line in done.stdout.splitlines() if line.strip()]


def test_cfn_lint_finds_no_errors(full: Synth) -> None:
    findings = cfn_lint_findings(full.template_files)
    unexpected = [f for f in findings if f.split(":")[5] not in CDK_WARNINGS]
    assert not unexpected, "\n".join(findings)


def test_modulestack_templates_pass_cfn_lint() -> None:
    root = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "modules"
    files = sorted(root.glob("*/modulestack.yaml"))
    assert len(files) == 2
    assert cfn_lint_findings(files) == []
