"""Pipelines run for real on a local Ray head (tests/fixtures/ray_head.py)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ray_operator.api.pipeline import (
    PIPELINE_FAILED,
    REASON_DEADLINE_EXCEEDED,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_STOPPED,
    STEP_SUCCEEDED,
    parse_pipeline,
)
from ray_operator.cli.pipeline import app
from ray_operator.jobs.ray_api import RayJobsClient
from ray_operator.pipelines.local import run_pipeline
from tests.fixtures.ray_head import RayHead

EXAMPLE = Path(__file__).parents[3] / "examples" / "pipelines" / "train-inference"
pytestmark = pytest.mark.slow

WRITE_MARKER = """
import argparse, pathlib
p = argparse.ArgumentParser(); p.add_argument("--kwargs", nargs="*")
kw = dict(i.split("=", 1) for i in p.parse_args().kwargs)
pathlib.Path(kw["output_dir"]).mkdir(parents=True, exist_ok=True)
pathlib.Path(kw["output_dir"], "ran").write_text(kw["input_dir"])
"""


def example_copy(where: Path) -> Path:
    """The example as shipped, with this venv's `python` first on the jobs' PATH.

    The test's Ray head runs from .venv/bin without the venv being activated, so a bare `python`
    in an entrypoint would be the system's (no Ray, no torch); on a cluster it is the image's.
    """
    target = where / "example"
    shutil.copytree(EXAMPLE, target)
    manifest = yaml.safe_load((target / "pipeline.yaml").read_text())
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    for step in manifest["spec"]["steps"]:
        step["runtimeEnv"] = {"env_vars": {"PATH": path}}
    (target / "pipeline.yaml").write_text(yaml.safe_dump(manifest))
    return target / "pipeline.yaml"


def test_example_trains_then_predicts_with_the_newest_checkpoint(
    ray_head: RayHead, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    result = CliRunner().invoke(
        app,
        [
            "run", str(example_copy(tmp_path)), "--address", ray_head.address,
            "--export-path", str(export), "--run-id", "r1", "--poll-interval", "0.5",
        ],
    )
    assert result.exit_code == 0, result.output[-4000:]
    assert "pipeline train-inference succeeded" in result.output
    assert "train |" in result.output  # live logs, prefixed by step

    train_dir, inference_dir = export / "r1" / "train", export / "r1" / "inference"
    checkpoints = sorted((train_dir / "checkpoints").rglob("model.pt"))
    assert len(checkpoints) == 3  # num_to_keep=3 of 8 epochs
    metrics = json.loads((inference_dir / "metrics.json").read_text())
    assert metrics["checkpoint_epoch"] == 8  # the newest one was loaded
    assert metrics["accuracy"] > metrics["baseline_accuracy"] + 0.2
    with open(inference_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["heldout_samples"] == 800
    assert {row["predicted"] for row in rows} <= {"0", "1"}


async def test_failing_first_step_stops_the_pipeline(ray_head: RayHead, tmp_path: Path) -> None:
    pipeline = parse_pipeline(
        {
            "metadata": {"name": "fails"},
            "spec": {
                "exportPath": str(tmp_path),
                "steps": [
                    {"name": "first", "script": "import sys\nsys.exit('boom: bad input data')\n"},
                    {"name": "second", "script": WRITE_MARKER},
                ],
            },
        }
    )
    async with RayJobsClient(ray_head.address) as client:
        result = await run_pipeline(client, pipeline, base_dir=None, run_id="f1", poll_interval=0.3)
        jobs = {job.submission_id for job in await client.list()}
    assert result.state == PIPELINE_FAILED
    assert [s.state for s in result.steps] == [STEP_FAILED, STEP_SKIPPED]
    assert "boom: bad input data" in result.message
    assert "step 'first' failed" in result.message
    assert "not run: step 'first'" in result.steps[1].message
    assert "fails-f1-second" not in jobs  # never submitted
    assert not (tmp_path / "f1" / "second").exists()


async def test_second_step_reads_first_steps_output_dir(ray_head: RayHead, tmp_path: Path) -> None:
    pipeline = parse_pipeline(
        {
            "metadata": {"name": "chain"},
            "spec": {
                "exportPath": str(tmp_path),
                "steps": [
                    {"name": "a", "script": WRITE_MARKER},
                    {"name": "b", "script": WRITE_MARKER, "parameters": {"x": "a b='c'"}},
                ],
            },
        }
    )
    async with RayJobsClient(ray_head.address) as client:
        result = await run_pipeline(client, pipeline, base_dir=None, run_id="c1", poll_interval=0.3)
    assert result.succeeded, result.message
    assert (tmp_path / "c1" / "b" / "ran").read_text() == str(tmp_path / "c1" / "a")


async def test_pipeline_timeout_stops_the_running_job(ray_head: RayHead, tmp_path: Path) -> None:
    pipeline = parse_pipeline(
        {
            "metadata": {"name": "slow"},
            "spec": {
                "exportPath": str(tmp_path),
                "steps": [
                    {"name": "sleeper", "script": "import time\nprint('zzz')\ntime.sleep(600)\n"},
                    {"name": "after", "script": WRITE_MARKER},
                ],
            },
        }
    )
    async with RayJobsClient(ray_head.address) as client:
        result = await run_pipeline(
            client, pipeline, base_dir=None, run_id="t1", poll_interval=0.3, timeout_seconds=6
        )
        info = await client.info("slow-t1-sleeper")
    assert result.state == PIPELINE_FAILED
    assert result.reason == REASON_DEADLINE_EXCEEDED
    assert result.steps[0].state == STEP_STOPPED
    assert result.steps[1].state == STEP_SKIPPED
    assert info.status == "STOPPED"  # the Ray job itself was stopped, not left running


async def test_step_deadline_and_retries(ray_head: RayHead, tmp_path: Path) -> None:
    flaky = (
        "import argparse, pathlib, sys\n"
        "p = argparse.ArgumentParser(); p.add_argument('--kwargs', nargs='*')\n"
        "kw = dict(i.split('=', 1) for i in p.parse_args().kwargs)\n"
        "mark = pathlib.Path(kw['export_path'], 'tried')\n"
        "if not mark.exists():\n    mark.write_text('1'); sys.exit('first attempt fails')\n"
    )
    pipeline = parse_pipeline(
        {
            "metadata": {"name": "retry"},
            "spec": {"exportPath": str(tmp_path), "steps": [
                {"name": "flaky", "script": flaky, "retries": 1},
            ]},
        }
    )
    async with RayJobsClient(ray_head.address) as client:
        result = await run_pipeline(client, pipeline, base_dir=None, run_id="x1", poll_interval=0.3)
    assert result.succeeded, result.message
    assert result.steps[0].state == STEP_SUCCEEDED
    assert result.steps[0].attempts == 2
    assert result.steps[0].submission_id == "retry-x1-flaky-2"


def test_run_step_runs_one_step_from_the_job_environment(
    ray_head: RayHead, tmp_path: Path
) -> None:
    """What the Step Functions Job's container does: step from env, input parameters merged."""
    from ray_operator.api.pipeline_step import StepRun

    script = WRITE_MARKER + "pathlib.Path(kw['output_dir'], 'epochs').write_text(kw['epochs'])\n"
    step = StepRun(
        pipeline="sfn", step="b", index=1, script=script, parameters={"epochs": "8"},
        exportPath=str(tmp_path), previousStep="a",
    )
    env = {
        "RAY_PIPELINE_STEP": step.model_dump_json(),
        "RAY_PIPELINE_RUN_ID": "exec-1",
        "RAY_ADDRESS": ray_head.address,
        "RAY_PIPELINE_INPUT": json.dumps({"cluster": {"name": "x"}, "parameters": {"epochs": 2}}),
    }
    result = CliRunner().invoke(app, ["run-step", "--poll-interval", "0.3"], env=env)
    assert result.exit_code == 0, result.output
    assert "step b: SUCCEEDED" in result.output
    out = tmp_path / "exec-1" / "b"
    assert (out / "epochs").read_text() == "2"  # the execution input's parameters win
    assert (out / "ran").read_text() == str(tmp_path / "exec-1" / "a")

    failing = step.model_copy(update={"step": "c", "script": "raise SystemExit('nope')\n"})
    env["RAY_PIPELINE_STEP"] = failing.model_dump_json()
    result = CliRunner().invoke(app, ["run-step", "--poll-interval", "0.3"], env=env)
    assert result.exit_code == 1
    assert "step c: FAILED" in result.output and "nope" in result.output
