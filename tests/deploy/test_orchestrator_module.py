"""The ray-orchestrator module: state machine from the pipeline export, role, log group, access."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.deploy.conftest import (
    ACCOUNT,
    BUCKET,
    ISSUER,
    OIDC_ARN,
    ORCHESTRATOR_DIR,
    ROOT,
    Synth,
    iam_statements,
    kubernetes_objects,
    metadata_output,
    orchestrator_parameters,
    seedfarmer_env,
)
from tests.unit.pipelines.asl_validator import validate

PARTITION = {"Ref": "AWS::Partition"}


def roles(synth: Synth) -> dict[str, dict[str, Any]]:
    return {
        name.rstrip("0123456789ABCDEF"): r["Properties"]
        for name, r in synth.resources("AWS::IAM::Role").items()
    }


def definition_of(synth: Synth) -> dict[str, Any]:
    machine = synth.one("AWS::StepFunctions::StateMachine")["Properties"]
    result: dict[str, Any] = json.loads(machine["DefinitionString"])
    return result


def test_state_machine_role_trusted_only_by_step_functions(orchestrator_full: Synth) -> None:
    assert roles(orchestrator_full)["StateMachineRole"]["AssumeRolePolicyDocument"] == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Principal": {"Service": "states.amazonaws.com"},
                "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
            }
        ],
    }


def test_state_machine_role_policy_is_exactly_describe_cluster_and_log_delivery(
    orchestrator_full: Synth,
) -> None:
    (policy,) = orchestrator_full.resources("AWS::IAM::Policy").values()
    assert policy["Properties"]["Roles"] == [
        {
            "Ref": next(
                n for n in orchestrator_full.resources("AWS::IAM::Role") if "StateMachine" in n
            )
        }
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statements == [
        {
            "Sid": "DescribeTheCluster",
            "Effect": "Allow",
            "Action": "eks:DescribeCluster",
            "Resource": {
                "Fn::Join": ["", ["arn:", PARTITION, f":eks:us-east-1:{ACCOUNT}:cluster/eks-dev"]]
            },
        },
        {
            "Effect": "Allow",
            "Action": [
                "logs:CreateLogDelivery",
                "logs:GetLogDelivery",
                "logs:UpdateLogDelivery",
                "logs:DeleteLogDelivery",
                "logs:ListLogDeliveries",
                "logs:PutResourcePolicy",
                "logs:DescribeResourcePolicies",
                "logs:DescribeLogGroups",
            ],
            "Resource": "*",
        },
    ]


def test_runner_service_account_role(orchestrator_full: Synth) -> None:
    role = roles(orchestrator_full)["ServiceAccountRole"]
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Federated": OIDC_ARN}
    assert statement["Condition"] == {
        "StringEquals": {
            f"{ISSUER}:sub": "system:serviceaccount:ray:ray-orchestrator",
            f"{ISSUER}:aud": "sts.amazonaws.com",
        }
    }
    (policy,) = role["Policies"]
    resources = [s["Resource"] for s in policy["PolicyDocument"]["Statement"]]
    assert resources == [
        {"Fn::Join": ["", ["arn:", PARTITION, f":s3:::{BUCKET}"]]},
        {"Fn::Join": ["", ["arn:", PARTITION, f":s3:::{BUCKET}/*"]]},
    ]


def test_cluster_access_is_namespaced_job_rights(orchestrator_full: Synth) -> None:
    entry = orchestrator_full.one("AWS::EKS::AccessEntry")["Properties"]
    assert entry["ClusterName"] == "eks-dev"
    assert entry["KubernetesGroups"] == ["ray-orchestrator-step-functions"]
    assert entry["PrincipalArn"]["Fn::GetAtt"][0].startswith("StateMachineRole")
    assert "AccessPolicies" not in entry  # no AWS-managed cluster-wide policy
    objects = {o["kind"]: o for o in kubernetes_objects(orchestrator_full)}
    assert sorted(objects) == ["Role", "RoleBinding", "ServiceAccount"]
    assert objects["Role"]["metadata"]["namespace"] == "ray"
    assert objects["Role"]["rules"] == [
        {
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "verbs": ["create", "delete", "get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    assert objects["RoleBinding"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": objects["Role"]["metadata"]["name"],
    }
    assert objects["RoleBinding"]["subjects"] == [
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": "ray-orchestrator-step-functions",
        }
    ]


def test_log_group_and_logging(orchestrator_full: Synth) -> None:
    ((name, group),) = orchestrator_full.resources("AWS::Logs::LogGroup").items()
    assert group["Properties"]["LogGroupName"] == "/aws/vendedlogs/states/idf-dev-ray-orchestrator"
    assert group["Properties"]["RetentionInDays"] == 731
    machine = orchestrator_full.one("AWS::StepFunctions::StateMachine")["Properties"]
    assert machine["LoggingConfiguration"] == {
        "Destinations": [
            {"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": [name, "Arn"]}}}
        ],
        "IncludeExecutionData": True,
        "Level": "ALL",
    }


def test_definition_is_the_pipeline_export(orchestrator_full: Synth) -> None:
    """One source: the definition equals what the project's ASL export gives for these options."""
    from ray_operator.api.pipeline import load_pipeline
    from ray_operator.pipelines.asl import AslOptions, build_state_machine

    pipeline_file = ROOT / "examples" / "pipelines" / "train-inference" / "pipeline.yaml"
    pipeline = load_pipeline(pipeline_file)
    pipeline = pipeline.model_copy(
        update={"spec": pipeline.spec.model_copy(update={"dataBucket": BUCKET})}
    )
    options = AslOptions(
        cluster_name="eks-dev",
        endpoint="https://ABC123.gr7.us-east-1.eks.amazonaws.com",
        certificate_authority="LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t",
        namespace="ray",
        runner_image=AslOptions().runner_image,
        service_account="ray-orchestrator",
        timeout_seconds=360 * 60,
        pvc_name="fsx-lustre-claim",
        export_path="/ray/export/",
    )
    expected = build_state_machine(pipeline, options, base_dir=pipeline_file.parent)
    assert definition_of(orchestrator_full) == expected


def test_definition_carries_the_parameters(orchestrator_full: Synth, tmp_path: Path) -> None:
    definition = definition_of(orchestrator_full)
    assert definition["TimeoutSeconds"] == 21600  # step_function_timeout 360 minutes
    tasks = [s for s in definition["States"].values() if s["Type"] == "Task"]
    assert [t["Resource"] for t in tasks] == ["arn:aws:states:::eks:runJob.sync"] * 2
    for task in tasks:
        parameters = task["Parameters"]
        assert parameters["ClusterName"] == "eks-dev"
        assert parameters["Namespace"] == "ray"
        assert parameters["Endpoint"] == "https://ABC123.gr7.us-east-1.eks.amazonaws.com"
        pod = parameters["Job"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "ray-orchestrator"
        assert pod["volumes"] == [
            {"name": "export", "persistentVolumeClaim": {"claimName": "fsx-lustre-claim"}}
        ]
        (container,) = pod["containers"]
        assert container["volumeMounts"] == [{"name": "export", "mountPath": "/ray/export/"}]
    done = validate(definition, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_metadata_outputs(orchestrator_full: Synth) -> None:
    resources = orchestrator_full.template["Resources"]
    by_type = {r["Type"]: n for n, r in resources.items() if not n.startswith("StateMachineRole")}
    role = next(n for n in resources if n.startswith("ServiceAccountRole"))
    assert metadata_output(orchestrator_full) == {
        "EksServiceAccountName": "ray-orchestrator",
        "EksServiceAccountRoleArn": f"<{role}.Arn>",
        "StateMachineArn": f"<{by_type['AWS::StepFunctions::StateMachine']}>",
        "LogGroupArn": f"<{by_type['AWS::Logs::LogGroup']}.Arn>",
    }


def test_app_synthesizes_with_required_parameters_only(tmp_path: Path) -> None:
    """``python app.py`` as SeedFarmer's deployspec runs it (cdk sets CDK_OUTDIR), cdk-nag on."""
    env = {
        **os.environ,
        **seedfarmer_env(
            "ray-orchestrator", {**orchestrator_parameters(), "step_function_timeout": "90"}
        ),
        "CDK_OUTDIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ORCHESTRATOR_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    template = json.loads((tmp_path / "idf-dev-ray-orchestrator.template.json").read_text())
    resources = template["Resources"]
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    definition = json.loads(machine["Properties"]["DefinitionString"])
    assert definition["TimeoutSeconds"] == 90 * 60
    for state in definition["States"].values():
        if state["Type"] == "Task":
            assert "volumes" not in state["Parameters"]["Job"]["spec"]["template"]["spec"]
    actions = [json.dumps(s["Action"]) for s in iam_statements(template)]
    assert actions and not [a for a in actions if '"s3:' in a]  # no bucket: no S3 rights at all
    assert "PermissionsBoundary" not in json.dumps(template)
