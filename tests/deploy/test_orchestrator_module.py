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
    synth_orchestrator,
)
from tests.unit.pipelines.asl_validator import validate

PARTITION = {"Ref": "AWS::Partition"}
SERVICE_ACCOUNT = "idf-dev-ray-orchestrator"  # <project>-<deployment>-<module>
GROUP = "idf-dev-ray-orchestrator-step-functions"
REPOSITORY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/idf-dev-ray-orchestrator"
CREATE = "Create the Ray cluster"


def roles(synth: Synth) -> dict[str, dict[str, Any]]:
    return {
        name.rstrip("0123456789ABCDEF"): r["Properties"]
        for name, r in synth.resources("AWS::IAM::Role").items()
    }


def definition_of(synth: Synth) -> dict[str, Any]:
    machine = synth.one("AWS::StepFunctions::StateMachine")["Properties"]
    result: dict[str, Any] = json.loads(machine["DefinitionString"])
    return result


def jobs_of(definition: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        s["Parameters"]["Job"]
        for s in definition["States"].values()
        if s.get("Resource") == "arn:aws:states:::eks:runJob.sync"
    ]


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


def test_step_service_account_role(orchestrator_full: Synth) -> None:
    role = roles(orchestrator_full)["ServiceAccountRole"]
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Federated": OIDC_ARN}
    assert statement["Condition"] == {
        "StringEquals": {
            f"{ISSUER}:sub": f"system:serviceaccount:ray:{SERVICE_ACCOUNT}",
            f"{ISSUER}:aud": "sts.amazonaws.com",
        }
    }
    (policy,) = role["Policies"]
    resources = [s["Resource"] for s in policy["PolicyDocument"]["Statement"]]
    assert resources == [
        {"Fn::Join": ["", ["arn:", PARTITION, f":s3:::{BUCKET}"]]},
        {"Fn::Join": ["", ["arn:", PARTITION, f":s3:::{BUCKET}/*"]]},
    ]


def test_rbac_covers_exactly_what_the_state_machine_calls(orchestrator_full: Synth) -> None:
    objects = {o["kind"]: o for o in kubernetes_objects(orchestrator_full)}
    assert sorted(objects) == ["Role", "RoleBinding", "ServiceAccount"]
    assert objects["Role"]["metadata"]["name"] == GROUP
    assert objects["Role"]["metadata"]["namespace"] == "ray"
    assert objects["Role"]["rules"] == [
        # eks:runJob.sync: the step Jobs, their pods and the pods' logs.
        {
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "verbs": ["create", "delete", "get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        # eks:call: each execution's Ray, created, read until healthy, deleted.
        {
            "apiGroups": ["ray.kubeflow.org"],
            "resources": ["rays"],
            "verbs": ["create", "delete", "get"],
        },
    ]
    calls = {
        (s["Parameters"]["Method"], s["Parameters"].get("Path") or s["Parameters"]["Path.$"])
        for s in definition_of(orchestrator_full)["States"].values()
        if s.get("Resource") == "arn:aws:states:::eks:call"
    }
    assert {method for method, _ in calls} == {"POST", "GET", "DELETE"}
    assert all("/apis/ray.kubeflow.org/v1/namespaces/ray/rays" in path for _, path in calls)
    assert objects["RoleBinding"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": GROUP,
    }
    assert objects["RoleBinding"]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": GROUP}
    ]


def test_access_entry_where_the_cluster_has_them(orchestrator_full: Synth) -> None:
    entry = orchestrator_full.one("AWS::EKS::AccessEntry")["Properties"]
    assert entry["ClusterName"] == "eks-dev"
    assert entry["KubernetesGroups"] == [GROUP]
    assert entry["PrincipalArn"]["Fn::GetAtt"][0].startswith("StateMachineRole")
    assert "AccessPolicies" not in entry  # no AWS-managed cluster-wide policy
    assert metadata_output(orchestrator_full)["EksAccessMode"] == "access_entry"


def test_aws_auth_mapping_where_the_cluster_has_only_config_map(
    orchestrator_aws_auth: Synth,
) -> None:
    """No access entry (CloudFormation would fail on such a cluster): the deployspec maps the
    role into aws-auth, from what the metadata says."""
    assert not orchestrator_aws_auth.resources("AWS::EKS::AccessEntry")
    metadata = metadata_output(orchestrator_aws_auth)
    role = next(n for n in orchestrator_aws_auth.resources("AWS::IAM::Role") if "StateMachine" in n)
    assert metadata["EksAccessMode"] == "aws_auth"
    assert metadata["StateMachineRoleArn"] == f"<{role}.Arn>"
    assert metadata["KubernetesGroup"] == GROUP
    objects = {o["kind"]: o for o in kubernetes_objects(orchestrator_aws_auth)}
    assert objects["RoleBinding"]["subjects"][0]["name"] == metadata["KubernetesGroup"]


def test_log_group_named_after_the_deployment_and_removed_with_it(
    orchestrator_full: Synth,
) -> None:
    ((name, group),) = orchestrator_full.resources("AWS::Logs::LogGroup").items()
    assert group["Properties"]["LogGroupName"] == "/aws/vendedlogs/states/idf-dev-ray-orchestrator"
    assert group["Properties"]["RetentionInDays"] == 731
    assert group["DeletionPolicy"] == "Delete"
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
    from common.image import image_tag

    from ray_operator.api.pipeline import load_pipeline
    from ray_operator.api.ray import RaySpec
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
        runner_image=f"{REPOSITORY}:{image_tag(ROOT)}",
        service_account=SERVICE_ACCOUNT,
        timeout_seconds=360 * 60,
        pvc_name="fsx-lustre-claim",
        export_path="/ray/export/",
        ray_cluster=RaySpec.model_validate({"worker": {"replicas": 2}}),
        ray_service_account=SERVICE_ACCOUNT,
    )
    expected = build_state_machine(pipeline, options, base_dir=pipeline_file.parent)
    assert definition_of(orchestrator_full) == expected


def test_definition_carries_the_parameters(orchestrator_full: Synth, tmp_path: Path) -> None:
    definition = definition_of(orchestrator_full)
    assert definition["TimeoutSeconds"] == 21600  # step_function_timeout 360 minutes
    jobs = jobs_of(definition)
    assert len(jobs) == 2
    image = metadata_output(orchestrator_full)["ImageUri"]
    assert image.startswith(f"{REPOSITORY}:0.1.0-")
    assert orchestrator_full.image is not None
    assert orchestrator_full.image["Outputs"]["ImageUri"]["Value"] == image  # what is pushed
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == SERVICE_ACCOUNT
        (container,) = pod["containers"]
        assert container["image"] == image  # the module's own image, not ray-operator:latest
        assert "volumes" not in pod  # the runner only submits
    # The claim is mounted where the steps run: every pod of the execution's Ray.
    ray = definition["States"][CREATE]["Parameters"]["RequestBody"]
    for role in ("head", "worker"):
        pod = ray["spec"][role]["template"]["spec"]
        assert pod["serviceAccountName"] == SERVICE_ACCOUNT  # the data bucket's rights
        assert {"name": "export", "persistentVolumeClaim": {"claimName": "fsx-lustre-claim"}} in (
            pod["volumes"]
        )
        for container in pod["containers"]:
            assert {"name": "export", "mountPath": "/ray/export/", "subPath": "ray/export"} in (
                container["volumeMounts"]
            )
    done = validate(definition, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_runner_image_parameter_replaces_the_module_image(tmp_path: Path) -> None:
    image = "registry.example.com/ray-operator:2.0"
    env = seedfarmer_env(
        "ray-orchestrator",
        {**orchestrator_parameters(), "runner_image": image, "eks_access_mode": "aws_auth"},
    )
    synth = synth_orchestrator(env, tmp_path)
    assert synth.image is None
    assert {j["spec"]["template"]["spec"]["containers"][0]["image"] for j in jobs_of(
        definition_of(synth)
    )} == {image}
    assert metadata_output(synth)["ImageUri"] == image
    assert "EcrRepositoryName" not in metadata_output(synth)


def test_metadata_outputs(orchestrator_full: Synth) -> None:
    resources = orchestrator_full.template["Resources"]
    by_type = {r["Type"]: n for n, r in resources.items() if not n.startswith("StateMachineRole")}
    role = next(n for n in resources if n.startswith("ServiceAccountRole"))
    machine_role = next(
        n for n, r in resources.items()
        if n.startswith("StateMachineRole") and r["Type"] == "AWS::IAM::Role"
    )
    metadata = metadata_output(orchestrator_full)
    assert metadata == {
        # The original module's four.
        "EksServiceAccountName": SERVICE_ACCOUNT,
        "EksServiceAccountRoleArn": f"<{role}.Arn>",
        "StateMachineArn": f"<{by_type['AWS::StepFunctions::StateMachine']}>",
        "LogGroupArn": f"<{by_type['AWS::Logs::LogGroup']}.Arn>",
        # Cluster access (read by the deployspec's aws-auth step) and the image.
        "StateMachineRoleArn": f"<{machine_role}.Arn>",
        "EksAccessMode": "access_entry",
        "KubernetesGroup": GROUP,
        "KubernetesUsername": GROUP,
        "ImageUri": metadata["ImageUri"],
        "EcrRepositoryName": "idf-dev-ray-orchestrator",
    }


def test_app_synthesizes_with_required_parameters_only(tmp_path: Path) -> None:
    """``python app.py`` as SeedFarmer's deployspec runs it (cdk sets CDK_OUTDIR), cdk-nag on."""
    env = {
        **os.environ,
        **seedfarmer_env(
            "ray-orchestrator",
            {**orchestrator_parameters(), "step_function_timeout": "90"},
            EKS_AUTHENTICATION_MODE="API",
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
    assert "persistentVolumeClaim" not in json.dumps(definition)  # no pvc_name: no volume
    actions = [json.dumps(s["Action"]) for s in iam_statements(template)]
    assert actions and not [a for a in actions if '"s3:' in a]  # no bucket: no S3 rights at all
    assert "PermissionsBoundary" not in json.dumps(template)
