"""The RayJob's children, built from the spec; the ConfigMap is one the runner reads back."""

from __future__ import annotations

import pytest

from ray_operator.api.rayjob import RayJobSpec
from ray_operator.builders.rayjob import (
    build_configmap,
    build_rayjob_children,
    build_role,
    build_role_binding,
    build_runner_pod,
    on_own_cluster,
    with_cluster_token,
)
from ray_operator.builders.rayjob_status import check_spec, runner_start_problem
from ray_operator.jobs.config import parse_config


def test_configmap_is_read_back_by_the_runner() -> None:
    spec = RayJobSpec.model_validate(
        {
            "cluster": "ray",
            "script": "print(1)",
            "parameters": {"text": "a, b = c"},
            "runtimeEnv": {"pip": {"requests": "2.32.3"}},
            "s3": {"endpoint": "minio:9000", "secure": False, "secretName": "s3creds"},
            "uploadBucket": "bucket",
            "activeDeadlineSeconds": 600,
            "kill": False,
        }
    )
    cm = build_configmap("train", "uid-1", spec, "http://ray-head:8265")
    assert cm["metadata"]["name"] == "train-rayjob"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    config = parse_config("train", "ns", cm["data"])
    assert config.address == "http://ray-head:8265"
    assert config.active_deadline_seconds == 600
    assert config.s3.endpoint_url == "http://minio:9000" and config.s3.secret == "s3creds"
    assert (
        config.logs_location is not None and str(config.logs_location) == "s3://bucket/train/logs"
    )


def test_role_is_limited_to_the_jobs_configmap() -> None:
    role = build_role("train", "u")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["train-rayjob"],
            "verbs": ["get", "update", "patch"],
        }
    ]
    binding = build_role_binding("train", "u", "ns")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "train-rayjob", "namespace": "ns"}
    ]


def test_pod_mounts_secrets_and_names_its_configmap() -> None:
    spec = RayJobSpec(
        address="http://h:8265", script="x", s3={"secretName": "s3creds"}, tokenSecretName="tok"
    )
    pod = build_runner_pod("train", "u", spec, "ray-operator:1")
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "ray_operator.jobs"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RAY_JOB_CONFIGMAP"] == "train-rayjob" and env["RAY_JOB_NAME"] == "train"
    assert {v["secret"]["secretName"] for v in pod["spec"]["volumes"]} == {"s3creds", "tok"}
    assert pod["spec"]["serviceAccountName"] == "train-rayjob"
    assert pod["spec"]["restartPolicy"] == "Never"


# --- runner pods for real clusters ---------------------------------------------------------------


def children(**spec: object) -> dict[str, dict]:
    checked = check_spec({"cluster": "ray", "script": "print(1)", **spec})
    assert checked.spec is not None, checked.error
    built = build_rayjob_children("train", "uid-1", "ns", checked.spec, "runner:1", "sid", {})
    return {c["kind"]: c for c in built}


def test_an_existing_service_account_gets_the_job_s_role_and_no_account_is_made() -> None:
    made = children(serviceAccountName="ml-irsa")
    assert "ServiceAccount" not in made
    assert made["Pod"]["spec"]["serviceAccountName"] == "ml-irsa"
    assert made["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "ml-irsa", "namespace": "ns"}
    ]
    assert made["Role"]["rules"][0]["resourceNames"] == ["train-rayjob"]  # still this job only
    default = children()
    assert default["Pod"]["spec"]["serviceAccountName"] == "train-rayjob"
    assert default["ServiceAccount"]["metadata"]["name"] == "train-rayjob"


def test_a_runner_template_shapes_the_pod_and_keeps_what_the_runner_needs() -> None:
    pod = children(runnerTemplate={
        "metadata": {"labels": {"team": "ml"}, "annotations": {"note": "x"}},
        "spec": {
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "imagePullSecrets": [{"name": "regcred"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "fsx"}}],
            "containers": [{"name": "runner", "resources": {"limits": {"memory": "1Gi"}},
                            "env": [{"name": "AWS_REGION", "value": "eu-west-1"}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        },
    })["Pod"]
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["metadata"]["labels"]["ray.kubeflow.org/rayjob"] == "train"
    assert pod["metadata"]["annotations"] == {"note": "x"}
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "cpu"} and spec["imagePullSecrets"] == [
        {"name": "regcred"}]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["command"] == ["python", "-m", "ray_operator.jobs"]
    assert container["resources"] == {"limits": {"memory": "1Gi"}}
    names = [e["name"] for e in container["env"]]
    assert "RAY_JOB_CONFIGMAP" in names and names[-1] == "AWS_REGION"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"spec": {"serviceAccountName": "x"}},
         "spec.runnerTemplate.spec.serviceAccountName='x': not accepted: the operator sets it"),
        ({"spec": {"containers": [{"name": "runner", "image": "mine"}]}},
         "spec.runnerTemplate.spec.containers[0].image='mine': not accepted"),
        ({"spec": {"containers": [{"name": "sidecar"}]}},
         "spec.runnerTemplate.spec.containers[0].name='sidecar'"),
        ({"metadata": {"labels": {"ray.kubeflow.org/rayjob": "other"}}},
         "spec.runnerTemplate.metadata.labels['ray.kubeflow.org/rayjob']: set by the operator"),
        ({"spec": {"containers": [{"name": "runner", "env": [{"name": "RAY_JOB_NAME",
                                                              "value": "x"}]}]}},
         "containers[0].env[0].name='RAY_JOB_NAME': the runner's own setting"),
        ({"spec": {"volumes": [{"name": "s3", "emptyDir": {}}]}},
         "spec.runnerTemplate.spec.volumes[0].name='s3': the runner's own volume name"),
        ({"spec": {"volumes": [{"name": "d", "emptyDir": {}}], "containers": [
            {"name": "runner", "volumeMounts": [{"name": "d", "mountPath": "/etc/ray-job/x"}]}]}},
         "volumeMounts[0].mountPath='/etc/ray-job/x': the runner's own mounts are there"),
        ({"spec": {"containers": [{"name": "runner", "volumeMounts": [
            {"name": "nope", "mountPath": "/d"}]}]}},
         "volumeMounts[0].name='nope': no such volume in spec.runnerTemplate.spec.volumes"),
    ],
)
def test_what_the_runner_needs_cannot_be_overridden(template: dict, message: str) -> None:
    checked = check_spec({"cluster": "ray", "script": "print(1)", "runnerTemplate": template})
    assert checked.spec is None and checked.error is not None
    assert message in checked.error, checked.error


def test_a_bad_service_account_name_is_named() -> None:
    checked = check_spec({"cluster": "ray", "script": "x", "serviceAccountName": "ML_Irsa"})
    assert checked.error is not None and "spec.serviceAccountName='ML_Irsa'" in checked.error


def test_the_pod_ends_after_the_job_deadline_plus_a_margin_for_the_upload() -> None:
    assert children(activeDeadlineSeconds=600)["Pod"]["spec"]["activeDeadlineSeconds"] == 900
    assert "activeDeadlineSeconds" not in children()["Pod"]["spec"]


def pod_with(status: dict) -> dict:
    return {"metadata": {"name": "train-rayjob"}, "status": status}


def test_a_runner_pod_that_cannot_start_is_said_in_kubernetes_words() -> None:
    pulling = pod_with({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "runner:9"'}}}]})
    assert runner_start_problem(pulling) == (
        'the runner pod train-rayjob cannot start: ImagePullBackOff: Back-off pulling image '
        '"runner:9"')
    unschedulable = pod_with({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity"}]})
    found = runner_start_problem(unschedulable)
    assert found is not None and "cannot be scheduled: 0/3 nodes are available" in found
    creating = pod_with({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
        "reason": "ContainerCreating"}}}]})
    assert runner_start_problem(creating) is None  # on its way
    assert runner_start_problem(pod_with({"phase": "Running"})) is None
    assert runner_start_problem(None) is None


def test_runner_pods_get_the_operator_s_pull_secrets_unless_the_template_names_others() -> None:
    from ray_operator.settings import Settings, SettingsError

    settings = Settings.from_env({"RAY_OPERATOR_RUNNER_IMAGE_PULL_SECRETS": "regcred, mirror"})
    assert settings.runner_pull_secrets == ("regcred", "mirror")
    with pytest.raises(SettingsError, match="'Reg_Cred' is not a Secret name"):
        Settings.from_env({"RAY_OPERATOR_RUNNER_IMAGE_PULL_SECRETS": "Reg_Cred"})
    checked = check_spec({"cluster": "ray", "script": "x"})
    assert checked.spec is not None
    built = build_rayjob_children("t", "u", "ns", checked.spec, "img", None, {}, ("regcred",))
    (pod,) = [c for c in built if c["kind"] == "Pod"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    own = children(runnerTemplate={"spec": {"imagePullSecrets": [{"name": "team"}]}})["Pod"]
    assert own["spec"]["imagePullSecrets"] == [{"name": "team"}]


def test_a_script_from_a_configmap_key_is_mounted_and_read_as_a_file() -> None:
    checked = check_spec({"cluster": "ray", "scriptFrom": {
        "configMapKeyRef": {"name": "scripts", "key": "train.py"}}})
    assert checked.spec is not None, checked.error
    made = {c["kind"]: c for c in build_rayjob_children(
        "train", "uid-1", "ns", checked.spec, "runner:1", "sid", {})}
    data = made["ConfigMap"]["data"]
    assert data["jobdata.jobScript"] == "/etc/ray-job/script/train.py"
    assert data["jobdata.scriptLocation"] == "file"
    pod = made["Pod"]["spec"]
    assert {"name": "script-from", "configMap": {
        "name": "scripts", "items": [{"key": "train.py", "path": "train.py"}]}} in pod["volumes"]
    assert {"name": "script-from", "mountPath": "/etc/ray-job/script", "readOnly": True} in (
        pod["containers"][0]["volumeMounts"])


def test_a_job_on_a_ray_with_auth_uses_its_token_secret_unless_it_names_one() -> None:
    spec = RayJobSpec(cluster="ray", script="x")
    with_auth = {"spec": {"worker": {}, "auth": {"mode": "token"}}}
    assert with_cluster_token(spec, with_auth).tokenSecretName == "ray-auth"
    assert with_cluster_token(spec, {"spec": {"worker": {}}}).tokenSecretName is None
    assert with_cluster_token(spec, None).tokenSecretName is None  # not there yet: it waits
    named = RayJobSpec(cluster="ray", script="x", tokenSecretName="mine")
    assert with_cluster_token(named, with_auth).tokenSecretName == "mine"
    own = on_own_cluster("job", RayJobSpec(
        clusterSpec={"worker": {}, "auth": {"mode": "token"}}, script="x"))
    assert with_cluster_token(own, None).tokenSecretName == "job-ray-auth"
    pod = build_runner_pod("job", "u", with_cluster_token(own, None), "runner:1")
    assert {"name": "ray-token", "secret": {"secretName": "job-ray-auth"}} in pod["spec"]["volumes"]
