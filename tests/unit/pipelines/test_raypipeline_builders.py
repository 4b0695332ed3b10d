"""Golden tests of the RayPipeline builders: step RayJobs, the created Ray, and the next move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ray_operator.api.pipeline import PipelineSpec, parse_pipeline
from ray_operator.api.rayjob import RayJobSpec
from ray_operator.builders.default_templates import default_head_template_v2
from ray_operator.builders.rayjob import build_configmap_data
from ray_operator.builders.raypipeline import (
    Observed,
    build_cluster,
    build_step_rayjob,
    check_buildable,
    fit_name,
    kill_patch,
    plan_pipeline,
    step_job_name,
)

Obj = dict[str, Any]
T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
TRAIN = "import sys\nprint('train', sys.argv)\n"
INFER = "import sys\nprint('infer', sys.argv)\n"
OWNER = {
    "apiVersion": "ray.kubeflow.org/v1",
    "kind": "RayPipeline",
    "name": "ti",
    "uid": "u-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def make_spec(**fields: Any) -> PipelineSpec:
    data: Obj = {
        "cluster": "ray",
        "exportPath": "/ray/export/",
        "dataBucket": "data-bucket",
        "steps": [
            {"name": "train", "script": TRAIN, "parameters": {"epochs": 8},
             "activeDeadlineSeconds": 900, "retries": 1},
            {"name": "inference", "script": INFER},
        ],
        **fields,
    }
    return PipelineSpec.model_validate({k: v for k, v in data.items() if v is not None})


def body(spec: PipelineSpec, status: Obj | None = None) -> Obj:
    return {
        "apiVersion": "ray.kubeflow.org/v1",
        "kind": "RayPipeline",
        "metadata": {"name": "ti", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": spec.model_dump(exclude_none=True),
        **({"status": status} if status else {}),
    }


def job(name: str, step: str, state: str | None, attempt: int = 1, **status: str) -> Obj:
    return {
        "metadata": {
            "name": name,
            "labels": {"ray.kubeflow.org/pipeline-step": step,
                       "ray.kubeflow.org/pipeline-attempt": str(attempt)},
            "creationTimestamp": "2026-11-23T10:00:01Z",
        },
        "spec": {},
        "status": {"jobStatus": state, **status} if state else {},
    }


HEALTHY = {"metadata": {"name": "ray"}, "status": {"health": "True"}}


# --- step -> RayJob -----------------------------------------------------------------------------
def test_first_step_rayjob() -> None:
    manifest = build_step_rayjob(
        pipeline="ti", namespace="ns", uid="u-1", spec=make_spec(), index=0, cluster="ray"
    )
    assert manifest == {
        "apiVersion": "ray.kubeflow.org/v1",
        "kind": "RayJob",
        "metadata": {
            "name": "ti-train",
            "namespace": "ns",
            "labels": {
                "ray.kubeflow.org/raypipeline": "ti",
                "app.kubernetes.io/managed-by": "ray-operator",
                "ray.kubeflow.org/pipeline-step": "train",
                "ray.kubeflow.org/pipeline-attempt": "1",
            },
            "ownerReferences": [OWNER],
        },
        "spec": {
            "cluster": "ray",
            "script": TRAIN,
            "parameters": {
                "export_path": "/ray/export/",
                "data_bucket": "data-bucket",
                "run_id": "u-1",
                "output_dir": "/ray/export/u-1/train",
                "epochs": "8",
            },
            "activeDeadlineSeconds": 900,
        },
    }
    # The RayJob controller reads it back as a RayJob spec.
    RayJobSpec.model_validate(manifest["spec"])


def test_second_step_reads_the_first_steps_output_dir() -> None:
    manifest = build_step_rayjob(
        pipeline="ti", namespace="ns", uid="u-1", spec=make_spec(), index=1, cluster="ray",
        attempt=2,
    )
    assert manifest["metadata"]["name"] == "ti-inference-2"
    assert manifest["spec"]["parameters"] == {
        "export_path": "/ray/export/",
        "data_bucket": "data-bucket",
        "run_id": "u-1",
        "output_dir": "/ray/export/u-1/inference",
        "input_dir": "/ray/export/u-1/train",
    }


def test_s3_script_runtime_env_and_address() -> None:
    spec = make_spec(
        cluster=None, address="http://head:8265", dataBucket=None,
        steps=[{"name": "a", "script": "s3://bucket/a.py",
                "runtimeEnv": {"pip": ["numpy", "torch==2.5.1", "scikit-learn>=1.5"],
                               "env_vars": {"OMP_NUM_THREADS": 1}}}],
    )
    manifest = build_step_rayjob(
        pipeline="p", namespace="ns", uid="u", spec=spec, index=0, cluster=None
    )
    assert manifest["spec"] == {
        "address": "http://head:8265",
        "script": "s3://bucket/a.py",
        "scriptLocation": "s3",
        "parameters": {
            "export_path": "/ray/export/", "run_id": "u", "output_dir": "/ray/export/u/a",
        },
        "runtimeEnv": {
            "pip": {"numpy": "", "torch": "==2.5.1", "scikit-learn": ">=1.5"},
            "env": {"OMP_NUM_THREADS": "1"},
        },
        "s3": {},
    }
    # What the runner gets: the same requirements pip would have been given.
    data = build_configmap_data(RayJobSpec.model_validate(manifest["spec"]), "http://head:8265")
    assert data["jobdata.scriptLocation"] == "s3"


def test_what_a_resource_cannot_run_is_named() -> None:
    spec = make_spec(
        rayClusterSpec={"worker": {"replicas": 1}},
        steps=[{"name": "train", "script": "train.py", "runtimeEnv": {"conda": "env.yaml"}}],
    )
    assert check_buildable(spec) == [
        "spec.steps[0].script: 'train.py' is not accepted in a RayPipeline resource: a file "
        "relative to the pipeline file is not in the cluster; use `ray-operator pipeline "
        "apply` (it puts the files in a ConfigMap, scriptFrom), write the script inline "
        "(script: |), give s3://bucket/key or bucket:key, or an absolute path in the runner image",
        "spec.steps[0].runtimeEnv: keys ['conda'] are not accepted in a RayPipeline resource: "
        "use 'pip' and 'env_vars'",
        "spec: cluster, rayClusterSpec given: set exactly one of cluster (a Ray in this "
        "namespace), address (a Ray job API URL) or rayClusterSpec (a Ray to create)",
    ]
    assert check_buildable(make_spec()) == []


def test_long_names_stay_within_kubernetes_limits() -> None:
    long = "a" * 60
    name = step_job_name(long, "train", 3)
    assert len(name) == 63 and name.startswith("a" * 40)
    assert name != step_job_name(long, "train", 2)
    assert fit_name("short", 63) == "short"


# --- embedded cluster -> Ray --------------------------------------------------------------------
def test_created_cluster_mounts_the_pvc_at_the_export_path() -> None:
    spec = make_spec(cluster=None, pvcName="fsx-claim", rayClusterSpec={"worker": {"replicas": 2}})
    ray = build_cluster(pipeline="ti", namespace="ns", uid="u-1", spec=spec, ray_image="ray:1")
    assert ray["metadata"] == {
        "name": "ti-ray",
        "namespace": "ns",
        "labels": {"ray.kubeflow.org/raypipeline": "ti",
                   "app.kubernetes.io/managed-by": "ray-operator"},
        "ownerReferences": [OWNER],
    }
    assert ray["spec"]["worker"]["replicas"] == 2
    head = ray["spec"]["head"]["template"]["spec"]
    expected_head = default_head_template_v2("ray:1")["spec"]
    expected_head["volumes"].append(
        {"name": "pipeline-export", "persistentVolumeClaim": {"claimName": "fsx-claim"}}
    )
    expected_head["containers"][0]["volumeMounts"].append(
        {"name": "pipeline-export", "mountPath": "/ray/export/"}
    )
    assert head == expected_head
    for role in ("head", "worker"):
        pod = ray["spec"][role]["template"]["spec"]
        assert {"name": "pipeline-export", "persistentVolumeClaim": {"claimName": "fsx-claim"}} \
            in pod["volumes"]
        for container in pod["containers"]:
            assert {"name": "pipeline-export", "mountPath": "/ray/export/"} \
                in container["volumeMounts"]


def test_user_templates_get_the_mount_in_every_container() -> None:
    template = {"spec": {"containers": [{"name": "ray", "image": "my:1"},
                                        {"name": "sidecar", "image": "s:1"}]}}
    spec = make_spec(cluster=None, pvcName="claim", exportPath="/data",
                     rayClusterSpec={"head": {"template": template},
                                     "worker": {"replicas": 1, "template": template}})
    ray = build_cluster(pipeline="ti", namespace="ns", uid="u", spec=spec, ray_image="unused")
    assert ray["spec"]["worker"]["template"] == {
        "spec": {
            "containers": [
                {"name": "ray", "image": "my:1",
                 "volumeMounts": [{"name": "pipeline-export", "mountPath": "/data"}]},
                {"name": "sidecar", "image": "s:1",
                 "volumeMounts": [{"name": "pipeline-export", "mountPath": "/data"}]},
            ],
            "volumes": [{"name": "pipeline-export",
                         "persistentVolumeClaim": {"claimName": "claim"}}],
        }
    }


def test_without_a_pvc_the_cluster_spec_is_kept_as_written() -> None:
    spec = make_spec(cluster=None, rayClusterSpec={"worker": {"replicas": 1}})
    ray = build_cluster(pipeline="ti", namespace="ns", uid="u", spec=spec, ray_image="ray:1")
    assert ray["spec"] == {"worker": {"replicas": 1}}


# --- the state machine ---------------------------------------------------------------------------
def plan(spec: PipelineSpec, jobs: list[Obj], status: Obj | None = None,
         cluster: Obj | None = HEALTHY, now: datetime = T0) -> Any:
    observed = Observed(jobs={j["metadata"]["name"]: j for j in jobs}, cluster=cluster, now=now)
    return plan_pipeline(body(spec, status), spec, observed, "ray:1")


def states(result: Any) -> list[tuple[str, str]]:
    return [(s["name"], s["state"]) for s in result.status["steps"]]


def test_first_reconcile_creates_the_first_step_only() -> None:
    result = plan(make_spec(), [])
    assert result.create_job["metadata"]["name"] == "ti-train"
    assert result.status["phase"] == "Running" and result.status["currentStep"] == "train"
    assert result.status["startTime"] == "2026-11-23T10:00:00Z"
    assert states(result) == [("train", "PENDING"), ("inference", "PENDING")]
    assert result.wake_at == T0 + timedelta(minutes=360)


def test_second_step_only_after_the_first_succeeded() -> None:
    status = plan(make_spec(), []).status
    running = plan(make_spec(), [job("ti-train", "train", "RUNNING")], status)
    assert running.create_job is None
    assert states(running) == [("train", "RUNNING"), ("inference", "PENDING")]
    done = plan(make_spec(), [job("ti-train", "train", "SUCCEEDED",
                                  endTime="2026-11-23T10:01:00Z")], running.status)
    assert done.create_job["metadata"]["name"] == "ti-inference"
    assert done.status["steps"][0]["endTime"] == "2026-11-23T10:01:00Z"
    assert done.status["currentStep"] == "inference"


def test_a_failed_step_is_retried_then_fails_the_pipeline() -> None:
    spec = make_spec()
    first = plan(spec, [job("ti-train", "train", "FAILED", message="boom")])
    assert first.create_job["metadata"]["name"] == "ti-train-2"
    assert first.status["phase"] == "Running"
    jobs = [job("ti-train", "train", "FAILED", message="boom"),
            job("ti-train-2", "train", "FAILED", attempt=2, message="ValueError: bad data")]
    failed = plan(spec, jobs, first.status)
    assert failed.create_job is None
    assert failed.status["phase"] == "Failed"
    assert failed.status["reason"] == "StepFailed"
    assert failed.status["message"] == "step 'train' failed: ValueError: bad data"
    assert failed.status["steps"][1] == {
        "name": "inference", "state": "SKIPPED",
        "message": "not run: step 'train' did not succeed",
    }
    assert ("Warning", "StepFailed", "step 'train' failed: ValueError: bad data") in failed.events


def test_timeout_stops_the_running_step() -> None:
    spec = make_spec(timeoutMinutes=1)
    status = plan(spec, []).status
    late = T0 + timedelta(seconds=61)
    result = plan(spec, [job("ti-train", "train", "RUNNING")], status, now=late)
    assert result.kill_jobs == ["ti-train"]
    assert result.status["phase"] == "Failed"
    assert result.status["reason"] == "DeadlineExceeded"
    assert states(result) == [("train", "STOPPED"), ("inference", "SKIPPED")]
    assert kill_patch("DeadlineExceeded") == {
        "metadata": {"annotations": {"ray.kubeflow.org/stopped-by": "DeadlineExceeded"}},
        "spec": {"kill": True},
    }


def test_waits_for_a_healthy_cluster_and_creates_the_embedded_one() -> None:
    spec = make_spec(cluster=None, rayClusterSpec={"worker": {"replicas": 1}})
    missing = plan(spec, [], cluster=None)
    assert missing.create_cluster["metadata"]["name"] == "ti-ray"
    assert missing.create_job is None
    assert missing.status["phase"] == "Pending"
    assert missing.status["message"] == "waiting for Ray 'ti-ray' to exist"
    starting = plan(spec, [], missing.status, cluster={"metadata": {"name": "ti-ray"},
                                                       "status": {"health": "False"}})
    assert starting.create_cluster is None and starting.create_job is None
    healthy = plan(spec, [], starting.status, cluster=HEALTHY)
    assert healthy.create_job["spec"]["cluster"] == "ti-ray"


def test_created_cluster_is_deleted_when_done_unless_kept() -> None:
    jobs = [job("ti-train", "train", "SUCCEEDED"), job("ti-inference", "inference", "SUCCEEDED")]
    spec = make_spec(cluster=None, rayClusterSpec={"worker": {"replicas": 1}})
    done = plan(spec, jobs)
    assert done.status["phase"] == "Succeeded"
    assert done.delete_cluster == "ti-ray"
    kept = plan(make_spec(cluster=None, keepCluster=True,
                          rayClusterSpec={"worker": {"replicas": 1}}), jobs)
    assert kept.status["phase"] == "Succeeded" and kept.delete_cluster is None
    named = plan(make_spec(), jobs)
    assert named.delete_cluster is None  # a named cluster is never the pipeline's to delete


def test_a_pipeline_file_is_a_resource() -> None:
    resource = parse_pipeline(body(make_spec()))
    assert resource.spec == make_spec()
