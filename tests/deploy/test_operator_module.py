"""The ray-operator module: namespace, IRSA service account, this project's chart, outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from common.image import split_image

from tests.deploy.conftest import (
    ACCOUNT,
    ADMIN_ROLE,
    BUCKET,
    ISSUER,
    OIDC_ARN,
    OPERATOR_DIR,
    REAL_CHART,
    ROOT,
    Synth,
    iam_statements,
    kubernetes_objects,
    metadata_output,
    operator_parameters,
    resolve_join,
    seedfarmer_env,
    synth_operator,
)

PARTITION = {"Ref": "AWS::Partition"}


SERVICE_ACCOUNT = "idf-dev-ray-operator"  # <project>-<deployment>-<module>
REPOSITORY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/idf-dev-ray-operator"


def irsa_role(synth: Synth) -> dict[str, Any]:
    (role,) = [r for n, r in synth.resources("AWS::IAM::Role").items() if "ServiceAccount" in n]
    properties: dict[str, Any] = role["Properties"]
    return properties


def test_service_account_role_is_assumable_only_by_that_service_account(
    operator_full: Synth,
) -> None:
    assert irsa_role(operator_full)["AssumeRolePolicyDocument"] == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Principal": {"Federated": OIDC_ARN},
                "Condition": {
                    "StringEquals": {
                        f"{ISSUER}:sub": f"system:serviceaccount:ray:{SERVICE_ACCOUNT}",
                        f"{ISSUER}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


def test_service_account_may_use_only_the_data_bucket(operator_full: Synth) -> None:
    bucket = {"Fn::Join": ["", ["arn:", PARTITION, f":s3:::{BUCKET}"]]}
    objects = {"Fn::Join": ["", ["arn:", PARTITION, f":s3:::{BUCKET}/*"]]}
    assert irsa_role(operator_full)["Policies"] == [
        {
            "PolicyName": "DataBucket",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "ListDataBucket",
                        "Effect": "Allow",
                        "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
                        "Resource": bucket,
                    },
                    {
                        "Sid": "ReadWriteDataBucketObjects",
                        "Effect": "Allow",
                        "Action": ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                        "Resource": objects,
                    },
                ],
            },
        }
    ]
    # The only other identity policy is CDK's kubectl handler's (cluster, admin role, chart asset).
    for statement in iam_statements(operator_full.template):
        assert "s3:PutObject" not in statement["Action"] or statement["Resource"] == objects


def test_no_s3_access_without_a_bucket(operator_minimal: Synth) -> None:
    assert "Policies" not in irsa_role(operator_minimal)
    s3 = [
        s
        for s in iam_statements(operator_minimal.template)
        if any(
            a.startswith("s3:")
            for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        )
    ]
    # Only the kubectl handler's read of the chart zip (one object of the CDK asset bucket).
    (only,) = s3
    assert only["Action"] == "s3:GetObject"
    assert resolve_join(only["Resource"]).endswith(".zip")


def test_kubectl_handler_reads_only_the_chart_asset(operator_full: Synth) -> None:
    """The handler's own role: this cluster, the admin role, the chart's one object in S3."""
    (handler,) = [
        f for f in operator_full.resources("AWS::Lambda::Function", nested=True).values()
        if len(f["Properties"].get("Layers", [])) >= 2
    ]
    role_ref = handler["Properties"]["Role"]["Ref"]  # a parameter of the nested stack
    assert "KubectlHandlerRole" in role_ref
    policies = operator_full.resources("AWS::IAM::Policy")
    (statements,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for name, p in policies.items()
        if name.startswith("KubectlHandlerRole")
    ]
    chart = operator_full.one("Custom::AWSCDK-EKS-HelmChart")["Properties"]
    bucket, key = chart["ChartAssetURL"].removeprefix("s3://").split("/", 1)
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
            "Sid": "AssumeTheClusterAdminRole",
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": ADMIN_ROLE,
        },
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": {"Fn::Join": ["", ["arn:", PARTITION, f":s3:::{bucket}/{key}"]]},
        },
    ]
    # CDK's own handler role, which could read the whole asset bucket, is not made at all.
    for template in operator_full.nested:
        assert not [n for n in template["Resources"] if n.startswith("HandlerServiceRole")]


def test_namespace_and_annotated_service_account_only(operator_full: Synth) -> None:
    objects = kubernetes_objects(operator_full)
    assert sorted(o["kind"] for o in objects) == ["Namespace", "ServiceAccount"]
    # A ClusterRoleBinding to a ClusterRole that does not exist was a defect of the original.
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == SERVICE_ACCOUNT
    assert account["metadata"]["namespace"] == "ray"
    role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role_arn.startswith("<ServiceAccountRole") and role_arn.endswith(".Arn>")
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == "ray"


def test_chart_installed_from_asset_into_the_namespace(operator_full: Synth) -> None:
    chart = operator_full.one("Custom::AWSCDK-EKS-HelmChart")
    properties = chart["Properties"]
    assert properties["ChartAssetURL"].startswith(f"s3://cdk-hnb659fds-assets-{ACCOUNT}-us-east-1/")
    assert "Repository" not in properties and "Chart" not in properties
    assert properties["Release"] == SERVICE_ACCOUNT
    assert properties["Namespace"] == "ray"
    assert properties.get("CreateNamespace") in (None, False)
    assert properties["RoleArn"] == ADMIN_ROLE
    values = json.loads(properties["Values"])
    tag = values["image"]["tag"]
    assert values == {
        # The project's image, in the module's own repository (pushed by the deployspec).
        "image": {"repository": REPOSITORY, "tag": tag},
        "watchNamespaces": ["ray"],
        "rbac": {"clusterWide": False},
        "serviceAccount": {"create": False, "name": SERVICE_ACCOUNT},
    }
    from common.image import image_tag

    assert tag == image_tag(ROOT)
    # The chart waits for the service account it runs as (which waits for the namespace).
    manifests = operator_full.resources("Custom::AWSCDK-EKS-KubernetesResource")
    account_id = next(k for k, v in manifests.items() if "ServiceAccount" in json.dumps(v))
    assert account_id in chart["DependsOn"]


def test_operator_image_parameter_replaces_the_module_image(
    chart_dir: Path, tmp_path: Path
) -> None:
    image = "registry:5000/team/ray-operator:1.2"
    env = seedfarmer_env("ray-operator", {**operator_parameters(), "operator_image": image})
    synth = synth_operator(env, chart_dir, tmp_path)
    assert synth.image is None  # no repository, nothing to build
    values = json.loads(synth.one("Custom::AWSCDK-EKS-HelmChart")["Properties"]["Values"])
    assert values["image"] == {"repository": "registry:5000/team/ray-operator", "tag": "1.2"}
    assert metadata_output(synth)["ImageUri"] == image
    assert "EcrRepositoryName" not in metadata_output(synth)
    for given, expected in [
        ("registry:5000/ray-operator", ("registry:5000/ray-operator", "latest")),
        ("ray-operator:0.1.0", ("ray-operator", "0.1.0")),
    ]:
        assert split_image(given) == expected


def test_image_repository_is_the_module_s_with_lifecycle_rules(operator_full: Synth) -> None:
    assert operator_full.image is not None
    (repository,) = operator_full.image["Resources"].values()
    assert repository["Type"] == "AWS::ECR::Repository"
    properties = repository["Properties"]
    assert properties["RepositoryName"] == "idf-dev-ray-operator"
    assert properties["ImageTagMutability"] == "IMMUTABLE"
    assert properties["EmptyOnDelete"] is True and repository["DeletionPolicy"] == "Delete"
    rules = json.loads(properties["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    assert [(r["selection"]["tagStatus"], r["selection"]["countType"]) for r in rules] == [
        ("untagged", "sinceImagePushed"),
        ("any", "imageCountMoreThan"),
    ]
    assert all(r["action"] == {"type": "expire"} for r in rules)
    outputs = operator_full.image["Outputs"]
    chart = json.loads(operator_full.one("Custom::AWSCDK-EKS-HelmChart")["Properties"]["Values"])
    # What the deployspec pushes is what the chart runs.
    assert outputs["ImageUri"]["Value"] == f"{REPOSITORY}:{chart['image']['tag']}"
    assert outputs["RepositoryName"]["Value"] == "idf-dev-ray-operator"


def test_metadata_outputs(operator_full: Synth) -> None:
    role = next(n for n in operator_full.resources("AWS::IAM::Role") if "ServiceAccount" in n)
    metadata = metadata_output(operator_full)
    assert metadata == {
        "EksServiceAccountName": SERVICE_ACCOUNT,
        "EksServiceAccountRoleArn": f"<{role}.Arn>",
        "NamespaceName": "ray",
        "ImageUri": metadata["ImageUri"],
        "EcrRepositoryName": "idf-dev-ray-operator",
    }
    assert metadata["ImageUri"].startswith(f"{REPOSITORY}:0.1.0-")


def test_kubectl_layer_is_given_to_the_handler(operator_full: Synth) -> None:
    (layer,) = operator_full.resources("AWS::Lambda::LayerVersion").values()
    assert "kubectl" in layer["Properties"]["Description"]
    handlers = [
        f
        for f in operator_full.resources("AWS::Lambda::Function", nested=True).values()
        if len(f["Properties"].get("Layers", [])) >= 2
    ]
    assert handlers, "the kubectl handler Lambda has no kubectl layer"


@pytest.mark.skipif(
    not (REAL_CHART / "Chart.yaml").is_file(), reason="charts/ray-operator not there"
)
def test_values_render_the_real_chart_namespaced_with_our_service_account() -> None:
    """The values the stack passes, rendered by a real Helm engine with the project's chart."""
    helm_python = pytest.importorskip("helm_python")
    from operator_settings import OperatorSettings
    from operator_stack import chart_values

    from tests.deploy.conftest import operator_parameters, seedfarmer_env

    values = chart_values(
        OperatorSettings.from_env(seedfarmer_env("ray-operator", operator_parameters())),
        f"{REPOSITORY}:0.1.0-abc",
    )
    rendered = helm_python.Chart.load(str(REAL_CHART)).render(
        values, name="ray-operator", namespace="ray"
    )
    import yaml

    documents = [
        doc
        for name, text in rendered.items()
        if name.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    kinds = [doc["kind"] for doc in documents]
    assert "ServiceAccount" not in kinds  # the stack's IRSA service account is used
    # Every binding points at a role the chart itself renders (the original bound a ClusterRole
    # that was never created).
    roles = {(d["kind"], d["metadata"]["name"]) for d in documents if d["kind"].endswith("Role")}
    for binding in (d for d in documents if d["kind"].endswith("RoleBinding")):
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in roles, binding
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": "ray"}
        ]
    # Namespaced mode: the write rights are a Role in the watched namespace only.
    for cluster_role in (d for d in documents if d["kind"] == "ClusterRole"):
        for rule in cluster_role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, cluster_role
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == "ray"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == SERVICE_ACCOUNT
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{REPOSITORY}:0.1.0-abc"
    assert "ray" in json.dumps(deployment["spec"]["template"]["spec"]["containers"][0].get("env"))


@pytest.mark.skipif(
    not (REAL_CHART / "Chart.yaml").is_file(), reason="charts/ray-operator not there"
)
def test_app_synthesizes_with_required_parameters_only(tmp_path: Path) -> None:
    """``python app.py`` as the deployspec runs it: finds the chart, nag on, no bucket rights."""
    env = {
        **os.environ,
        **seedfarmer_env("ray-operator", operator_parameters()),
        "CDK_OUTDIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=OPERATOR_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "idf-dev-ray-operator-image.template.json").is_file()
    template = json.loads((tmp_path / "idf-dev-ray-operator.template.json").read_text())
    (chart,) = [
        r for r in template["Resources"].values() if r["Type"] == "Custom::AWSCDK-EKS-HelmChart"
    ]
    asset = chart["Properties"]["ChartAssetURL"].rsplit("/", 1)[1].removesuffix(".zip")
    assert (tmp_path / f"asset.{asset}" / "Chart.yaml").is_file()  # the chart itself is the asset
    assert not [s for s in iam_statements(template) if "s3:PutObject" in s["Action"]]
