"""Every example applies the way its README says, and what the README claims of it is tested.

The claims are checked where the machinery for them is (real Ray pods, the pipeline run in the
cluster, ...): ``CLAIMS`` names those tests, and a new example without one fails here. The GPU
recipe cannot run on this machine; its cluster is applied and checked for the shape its README
describes, and its pipeline for waiting on that cluster.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ray_operator.cli import app
from ray_operator.kube import DEPLOYMENT, RAYPIPELINE, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from tests.operator_process import OperatorProcess
from tests.waiting import eventually

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
GPU = EXAMPLES / "pipelines" / "gptj-deepspeed"
Obj = dict[str, Any]

# Each example -> the tests that check what its README (or the project's README) says of it.
CLAIMS: dict[str, list[str]] = {
    "ray-simple.yaml": [
        "tests/integration/test_ray_operator.py::test_simple_example_becomes_a_healthy_cluster",
        "tests/e2e/test_pods_start_ray.py::"
        "test_simple_example_pods_form_a_ray_cluster_that_runs_tasks",
    ],
    "ray-full.yaml": [
        "tests/integration/test_ray_operator.py::"
        "test_full_example_applies_unchanged_and_reports_the_misspelled_limit",
    ],
    "ray-secured.yaml": [
        "tests/integration/test_ray_operator.py::"
        "test_auth_and_network_policy_are_made_kept_and_removed_with_the_spec",
        "tests/e2e/test_ray_auth.py::"
        "test_a_ray_with_auth_refuses_requests_without_the_token_and_its_jobs_need_no_setting",
    ],
    "ray-autoscaling.yaml": [
        "tests/e2e/test_autoscaling.py::"
        "test_ray_grows_the_group_for_its_work_and_removes_only_idle_workers",
        "tests/integration/test_autoscaling.py::"
        "test_a_scale_down_removes_exactly_the_pods_ray_named",
    ],
    "rayjob.yaml": [
        "tests/integration/jobs/test_rayjob_controller.py::test_example_manifest_applies",
        "tests/integration/jobs/test_rayjob_controller.py::"
        "test_rayjob_runs_on_ray_and_reports_status_and_logs",
    ],
    "rayjob-own-cluster.yaml": [
        "tests/e2e/test_rayjob_own_cluster.py::"
        "test_a_job_with_its_own_cluster_runs_on_it_and_removes_it_after_the_ttl",
    ],
    "pipelines/train-inference/pipeline.yaml": [
        "tests/e2e/test_pipeline_in_cluster.py::"
        "test_the_example_pipeline_runs_in_the_cluster_with_its_volume",
        "tests/integration/pipelines/test_local_run.py::"
        "test_example_trains_then_predicts_with_the_newest_checkpoint",
    ],
    "pipelines/gptj-deepspeed/ray-cluster.yaml": [
        "tests/integration/test_examples.py::test_the_gpu_recipe_gets_the_cluster_its_readme_describes",
    ],
    "pipelines/gptj-deepspeed/pipeline.yaml": [
        "tests/integration/test_examples.py::test_the_gpu_recipe_gets_the_cluster_its_readme_describes",
    ],
}


def example_files() -> list[str]:
    return sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.yaml"))


def as_applied(relative: str) -> str:
    """The text a user pipes into kubectl: a pipeline through ``ray-operator pipeline manifest``
    (its READMEs say so: the scripts beside it must be inlined), anything else as it is."""
    path = EXAMPLES / relative
    if yaml.safe_load(path.read_text()).get("kind") != "RayPipeline":
        return path.read_text()
    printed = CliRunner().invoke(app, ["pipeline", "manifest", str(path)])
    assert printed.exit_code == 0, printed.output
    return printed.output


def kubectl(control_plane: LocalControlPlane, *args: str, text: str | None = None) -> str:
    done = subprocess.run(
        [str(control_plane.kubectl), *args],
        input=text,
        env=control_plane.kubectl_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    # Strict field validation turns unknown fields into errors; warnings would be news too.
    assert "Warning" not in done.stderr, done.stderr
    return done.stdout


def test_every_example_has_a_test_of_what_its_readme_says() -> None:
    assert example_files() == sorted(CLAIMS)
    for tests in CLAIMS.values():
        for reference in tests:
            file, function = reference.split("::")
            assert f"def {function}(" in (ROOT / file).read_text(), reference


@pytest.mark.parametrize("relative", example_files())
async def test_each_example_applies_with_kubectl_as_its_readme_says(
    relative: str, namespace: str, control_plane: LocalControlPlane
) -> None:
    # Server-side dry run: the CRD schema, strict field validation and admission judge it, and
    # examples that share a name do not meet.
    out = kubectl(
        control_plane, "apply", "--dry-run=server", "--validate=strict", "-n", namespace,
        "-o", "json", "-f", "-", text=as_applied(relative),
    )
    applied = json.loads(out)
    assert applied["metadata"]["namespace"] == namespace


def _container(deployment: Obj) -> Obj:
    container: Obj = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


async def test_the_gpu_recipe_gets_the_cluster_its_readme_describes(
    kube: Kube, namespace: str, control_plane: LocalControlPlane,
    running_operator: OperatorProcess,
) -> None:
    # kubectl apply -n ray -f ray-cluster.yaml
    kubectl(control_plane, "apply", "-n", namespace, "-f", str(GPU / "ray-cluster.yaml"))
    head = await eventually(
        lambda: kube.get_or_none(DEPLOYMENT, "gpu-ray-head", namespace), bool, what="head"
    )
    worker = await eventually(
        lambda: kube.get_or_none(DEPLOYMENT, "gpu-ray-worker", namespace), bool, what="workers"
    )
    assert head is not None and worker is not None
    head_pod, worker_pod = head["spec"]["template"]["spec"], worker["spec"]["template"]["spec"]
    # The README's table: a CPU head, 5 GPU workers with the toleration and 1 GPU each, the
    # claim on every pod at the export path, a 16 GiB /dev/shm.
    assert head_pod["nodeSelector"] == {"usage": "cpu"}
    assert worker["spec"]["replicas"] == 5 and worker_pod["nodeSelector"] == {"usage": "gpu"}
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in worker_pod[
        "tolerations"
    ]
    assert _container(worker)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for pod, deployment in ((head_pod, head), (worker_pod, worker)):
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == ["fsx-lustre-claim"]
        assert {"name": "export", "mountPath": "/ray/export/"} in _container(deployment)[
            "volumeMounts"
        ]
    shm = next(v for v in worker_pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}

    # ray-operator pipeline manifest pipeline.yaml | kubectl apply -n ray -f -
    kubectl(control_plane, "apply", "-n", namespace, "-f", "-",
            text=as_applied("pipelines/gptj-deepspeed/pipeline.yaml"))
    # No GPU node here: the cluster never becomes healthy and the pipeline says it waits for it.
    pipeline = await eventually(
        lambda: kube.get(RAYPIPELINE, "gptj-finetune", namespace),
        lambda p: bool((p.get("status") or {}).get("reason")),
        what="the pipeline's status",
    )
    assert pipeline["status"]["reason"] == "WaitingForCluster", pipeline["status"]
    assert pipeline["status"]["message"] == "waiting for Ray 'gpu-ray' to be healthy"
    assert pipeline["status"]["currentStep"] == "finetune"
