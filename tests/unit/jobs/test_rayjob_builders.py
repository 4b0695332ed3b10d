"""The RayJob's children, built from the spec; the ConfigMap is one the runner reads back."""

from __future__ import annotations

from ray_operator.api.rayjob import RayJobSpec
from ray_operator.builders.rayjob import (
    build_configmap,
    build_role,
    build_role_binding,
    build_runner_pod,
)
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
