"""The ray-operator module: namespace, the Ray pods' IRSA service account, this project's chart
(the operator as its own account, no IAM role), outputs, the README's Ray and RayJob."""

from __future__ import annotations

import json
import os
import re
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


RELEASE = "idf-dev-ray-operator"  # <project>-<deployment>-<module>
#: The Ray and runner pods' account, bound to the data bucket's role.
RAY_ACCOUNT = f"{RELEASE}-ray"
#: The operator's own account, made by the chart, with no IAM role.
OPERATOR_ACCOUNT = f"{RELEASE}-controller"
REPOSITORY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/idf-dev-ray-operator"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


def irsa_role_id(synth: Synth) -> str:
    (name,) = [n for n in synth.resources("AWS::IAM::Role") if "ServiceAccount" in n]
    assert name.startswith("RayServiceAccountRole"), name
    return name


def irsa_role(synth: Synth) -> dict[str, Any]:
    properties: dict[str, Any] = synth.resources("AWS::IAM::Role")[irsa_role_id(synth)][
        "Properties"
    ]
    return properties


def test_service_account_role_is_assumable_only_by_the_ray_pods_account(
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
                        f"{ISSUER}:sub": f"system:serviceaccount:ray:{RAY_ACCOUNT}",
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


def test_namespace_and_the_ray_pods_annotated_service_account_only(operator_full: Synth) -> None:
    objects = kubernetes_objects(operator_full)
    assert sorted(o["kind"] for o in objects) == ["Namespace", "ServiceAccount"]
    # A ClusterRoleBinding to a ClusterRole that does not exist was a defect of the original.
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == RAY_ACCOUNT
    assert account["metadata"]["namespace"] == "ray"
    # Bound to the role whose trust names it (above), and to no other.
    role_arn = account["metadata"]["annotations"][IRSA_ANNOTATION]
    assert role_arn == f"<{irsa_role_id(operator_full)}.Arn>"
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == "ray"


@pytest.mark.parametrize("synth_name", ["operator_full", "operator_minimal"])
def test_the_operator_s_own_account_has_no_iam_role(
    synth_name: str, request: pytest.FixtureRequest
) -> None:
    """The operator calls the Kubernetes API only: its account (the chart's) is not annotated,
    no role trusts it, and the only S3 rights are the Ray pods' role's (and the kubectl
    handler's read of the chart zip)."""
    synth: Synth = request.getfixturevalue(synth_name)
    values = json.loads(synth.one("Custom::AWSCDK-EKS-HelmChart")["Properties"]["Values"])
    assert values["serviceAccount"] == {"create": True, "name": OPERATOR_ACCOUNT}
    assert IRSA_ANNOTATION not in json.dumps(values)
    assert OPERATOR_ACCOUNT not in json.dumps(kubernetes_objects(synth))
    for template in synth.all_templates():
        for name, resource in template["Resources"].items():
            if resource["Type"] != "AWS::IAM::Role":
                continue
            trust = json.dumps(resource["Properties"]["AssumeRolePolicyDocument"])
            assert OPERATOR_ACCOUNT not in trust, name
            if "system:serviceaccount:" in trust:  # a role for pods: the Ray pods' one only
                assert name == irsa_role_id(synth)
                assert f"system:serviceaccount:ray:{RAY_ACCOUNT}" in trust
    s3 = [
        statement
        for template in synth.all_templates()
        for statement in iam_statements(template)
        if any(
            a.startswith("s3:")
            for a in (
                [statement["Action"]] if isinstance(statement["Action"], str)
                else statement["Action"]
            )
        )
    ]
    ray_role = synth.resources("AWS::IAM::Role")[irsa_role_id(synth)]["Properties"]
    ray_statements = [
        s for p in ray_role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]
    ]
    others = [s for s in s3 if s not in ray_statements]
    (chart_read,) = others  # the kubectl handler's, one object of the asset bucket
    assert chart_read["Action"] == "s3:GetObject"
    assert resolve_join(chart_read["Resource"]).endswith(".zip")


def test_two_deployments_share_no_account_release_or_trust() -> None:
    """Names come from project, deployment and module: another deployment or module in the same
    namespace never takes this one's accounts (nor the role meant for its pods)."""
    from operator_settings import OperatorSettings

    def settings(**names: str) -> OperatorSettings:
        env = seedfarmer_env("ray-operator", operator_parameters())
        env.update(names)
        return OperatorSettings.from_env(env)

    long = "x" * 40
    cases = [
        settings(),
        settings(SEEDFARMER_DEPLOYMENT_NAME="prod"),
        settings(SEEDFARMER_MODULE_NAME="ray-operator-2"),
        settings(SEEDFARMER_PROJECT_NAME=long, SEEDFARMER_DEPLOYMENT_NAME=long),
        settings(SEEDFARMER_PROJECT_NAME=long, SEEDFARMER_DEPLOYMENT_NAME=long + "y"),
    ]
    assert cases[0].ray_service_account_name == RAY_ACCOUNT
    assert cases[0].operator_service_account_name == OPERATOR_ACCOUNT
    assert cases[0].release_name == RELEASE
    names = [
        name
        for case in cases
        for name in (case.ray_service_account_name, case.operator_service_account_name)
    ]
    assert len(set(names)) == len(names), names
    assert len({case.release_name for case in cases}) == len(cases)
    label = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
    for case in cases:
        for name in (case.ray_service_account_name, case.operator_service_account_name):
            assert len(name) <= 63 and label.fullmatch(name), name
        assert case.ray_service_account_name.endswith("-ray")
        assert case.operator_service_account_name.endswith("-controller")


def test_chart_installed_from_asset_into_the_namespace(operator_full: Synth) -> None:
    chart = operator_full.one("Custom::AWSCDK-EKS-HelmChart")
    properties = chart["Properties"]
    assert properties["ChartAssetURL"].startswith(f"s3://cdk-hnb659fds-assets-{ACCOUNT}-us-east-1/")
    assert "Repository" not in properties and "Chart" not in properties
    assert properties["Release"] == RELEASE
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
        # The chart makes the operator's account (no IAM role); not the IRSA one any more.
        "serviceAccount": {"create": True, "name": OPERATOR_ACCOUNT},
    }
    from common.image import image_tag

    assert tag == image_tag(ROOT)
    # The chart waits for the namespace it installs into, as the Ray pods' account does.
    manifests = operator_full.resources("Custom::AWSCDK-EKS-KubernetesResource")
    kinds = {
        json.loads(resolve_join(v["Properties"]["Manifest"]))[0]["kind"]: k
        for k, v in manifests.items()
    }
    namespace_id, account_id = kinds["Namespace"], kinds["ServiceAccount"]
    assert namespace_id in chart["DependsOn"]
    assert namespace_id in manifests[account_id]["DependsOn"]


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
    role = irsa_role_id(operator_full)
    metadata = metadata_output(operator_full)
    assert metadata == {
        # The Ray and runner pods' account and its role: the original module's keys, one pair.
        "EksServiceAccountName": RAY_ACCOUNT,
        "EksServiceAccountRoleArn": f"<{role}.Arn>",
        "OperatorServiceAccountName": OPERATOR_ACCOUNT,
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
def test_values_render_the_real_chart_namespaced_with_its_own_plain_account() -> None:
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
    # The chart's own account for the operator: no annotation, so no IAM role.
    (account,) = [d for d in documents if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == OPERATOR_ACCOUNT
    assert account["metadata"]["namespace"] == "ray"
    assert not account["metadata"].get("annotations")
    assert IRSA_ANNOTATION not in json.dumps(documents)
    assert RAY_ACCOUNT not in json.dumps(documents)
    # Every binding points at a role the chart itself renders (the original bound a ClusterRole
    # that was never created).
    roles = {(d["kind"], d["metadata"]["name"]) for d in documents if d["kind"].endswith("Role")}
    for binding in (d for d in documents if d["kind"].endswith("RoleBinding")):
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in roles, binding
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": "ray"}
        ]
    # Namespaced mode: the write rights are a Role in the watched namespace only.
    for cluster_role in (d for d in documents if d["kind"] == "ClusterRole"):
        for rule in cluster_role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, cluster_role
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == "ray"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == OPERATOR_ACCOUNT
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


def readme_example(kind: str) -> dict[str, Any]:
    """The README's ``kind`` manifest ("Using the ServiceAccount of the Ray pods")."""
    import yaml

    text = (OPERATOR_DIR / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    (found,) = [
        doc for doc in (yaml.safe_load(b) for b in blocks)
        if doc.get("apiVersion") == "ray.kubeflow.org/v1" and doc.get("kind") == kind
    ]
    result: dict[str, Any] = found
    return result


def readme_account() -> str:
    """``EksServiceAccountName`` of the README's example deployment: project idf, deployment
    dev, module ray-operator in group ray (SeedFarmer's module name ray-ray-operator)."""
    from operator_settings import OperatorSettings

    env = seedfarmer_env("ray-ray-operator", operator_parameters())
    return OperatorSettings.from_env(env).ray_service_account_name


def test_readme_ray_runs_head_and_workers_as_the_module_s_account() -> None:
    """The README's Ray is valid, and the operator runs its head and workers as the account of
    the module's output (the one the role trusts)."""
    from ray_operator.cli.render import render_ray

    account = readme_account()
    assert account == "idf-dev-ray-ray-operator-ray"
    ray = readme_example("Ray")
    assert ray["metadata"]["namespace"] == operator_parameters()["namespace"]
    for role in ("head", "worker"):
        assert ray["spec"][role]["template"]["spec"]["serviceAccountName"] == account
    children = render_ray(ray, "rayproject/ray:2.60.0", None)
    deployments = [c for c in children if c["kind"] == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account
    # The job API the RayJob's runner calls is on the head Service.
    (service,) = [c for c in children if c["kind"] == "Service"]
    assert 8265 in [p["port"] for p in service["spec"]["ports"]]


def test_readme_rayjob_names_the_module_s_account_and_its_ray() -> None:
    job = readme_example("RayJob")
    assert job["spec"]["serviceAccountName"] == readme_account()
    assert job["spec"]["cluster"] == readme_example("Ray")["metadata"]["name"]
    assert job["metadata"]["namespace"] == readme_example("Ray")["metadata"]["namespace"]
    assert "s3" not in job["spec"]  # no Secret: the runner uses the account's role


def test_readme_rayjob_runner_runs_as_the_module_s_account() -> None:
    """The operator's own rendering of the README's RayJob: the runner Pod runs as the account
    and the job's Role is bound to it; no account of the job's own is made."""
    from ray_operator.cli.render import render_rayjob

    account = readme_account()
    children = render_rayjob(readme_example("RayJob"), f"{REPOSITORY}:0.1.0-abc")
    kinds = [c["kind"] for c in children]
    assert "ServiceAccount" not in kinds
    (pod,) = [c for c in children if c["kind"] == "Pod"]
    assert pod["spec"]["serviceAccountName"] == account
    (binding,) = [c for c in children if c["kind"] == "RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "ray"}]
