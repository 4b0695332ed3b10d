"""cdk-nag 3.x wiring: AWS Solutions checks as a CDK validation plugin, acknowledgements by finding.

cdk-nag 3 matches an acknowledgement only by its full finding id
(``AwsSolutions-IAM5[Resource::…]``), so each one is made for a finding that exists, with the
reason it is acceptable.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_eks as eks
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

#: Why the findings on CDK's own kubectl provider (a nested stack this project does not write) are
#: accepted. Only these rules are acknowledged there; any other finding still fails synthesis.
KUBECTL_PROVIDER_REASONS = {
    "AwsSolutions-IAM4": (
        "CDK's kubectl handler and provider-framework Lambdas use the AWS managed policies for"
        " Lambda logging and ECR image pulls; CDK creates and owns these roles"
    ),
    "AwsSolutions-IAM5": (
        "CDK's kubectl handler reads this stack's assets (the Helm chart zip) from the CDK"
        " bootstrap asset bucket and invokes its own handler versions (ARN:*); both are CDK-made"
    ),
    "AwsSolutions-L1": (
        "the runtime of CDK's kubectl handler and provider framework is chosen by aws-cdk-lib"
        " and upgraded with it"
    ),
}


def add_aws_solutions_checks(app: cdk.App) -> None:
    """Run the AWS Solutions pack when ``app`` synthesizes; unacknowledged errors fail synthesis."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(scope: IConstruct, finding_id: str, reason: str) -> None:
    """Acknowledge one finding (``RuleId`` or ``RuleId[Finding]``) under ``scope``, saying why."""
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=finding_id, reason=reason))


def acknowledge_kubectl_provider(stack: cdk.Stack, cluster: eks.ICluster) -> None:
    """Acknowledge the findings on CDK's kubectl provider nested stack, by rule, with reasons.

    Call after every manifest and chart of ``stack`` exists: asset grants are added as they come.
    The finding ids carry account-specific ARNs, so they are read from a check of the provider
    itself rather than spelled out here.
    """
    provider = eks.KubectlProvider.get_or_create(stack, cluster)
    report = AwsSolutionsChecks().validate_scope(provider)
    for violation in report.violations:
        rule = violation.rule_name.split("[", 1)[0]
        reason = KUBECTL_PROVIDER_REASONS.get(rule)
        if reason is not None:
            acknowledge(provider, violation.rule_name, reason)
