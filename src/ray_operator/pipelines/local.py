"""Run a pipeline's steps in order against any Ray cluster's job API.

Used by ``ray-operator pipeline run`` (the whole pipeline) and ``ray-operator pipeline run-step``
(one step, inside the Kubernetes Job of the Step Functions export). Each step is one Ray job whose
submission id is chosen before submitting (``<pipeline>-<run id>-<step>[-<attempt>]``), so a
repeated submit of the same attempt is recognised, not doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from ray_operator.api.pipeline import (
    PIPELINE_FAILED,
    PIPELINE_SUCCEEDED,
    REASON_DEADLINE_EXCEEDED,
    REASON_STEP_FAILED,
    STEP_FAILED,
    STEP_PENDING,
    STEP_RUNNING,
    STEP_SKIPPED,
    STEP_STOPPED,
    STEP_SUCCEEDED,
    RayPipelineResource,
)
from ray_operator.api.pipeline_step import StepRun, entrypoint, step_runs
from ray_operator.jobs.ray_api import SUCCEEDED, TERMINAL_STATES, JobInfo, RayJobsClient

STOP_WAIT_SECONDS: Final = 30.0

LogSink = Callable[[str, str], None]  # (step name, chunk of log text)
EventSink = Callable[["StepResult"], None]  # called when a step's state changes


@dataclass
class StepResult:
    """What happened to one step."""

    name: str
    state: str = STEP_PENDING
    submission_id: str | None = None
    attempts: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    message: str = ""
    reason: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds between start and end, when both are known."""
        if self.start_time and self.end_time:
            return (self.end_time - self.start_time).total_seconds()
        return None


@dataclass
class PipelineResult:
    """The run as a whole: ``state`` is Succeeded or Failed, ``reason`` says why it failed."""

    name: str
    run_id: str
    state: str = PIPELINE_SUCCEEDED
    reason: str | None = None
    message: str = ""
    steps: list[StepResult] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        """Every step succeeded."""
        return self.state == PIPELINE_SUCCEEDED


def new_run_id() -> str:
    """A short id that sorts by time: ``YYYYmmdd-HHMMSS-xxxx``."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


async def fetch_script(location: str) -> str:
    """The text of an S3 script (``s3://bucket/key`` or the original ``bucket:key``)."""
    if location.startswith("s3://"):
        bucket, _, key = location[5:].partition("/")
    else:
        bucket, _, key = location.partition(":")

    def get() -> str:
        import boto3

        try:
            body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise RuntimeError(
                f"script {location!r}: cannot read s3://{bucket}/{key}: {exc}"
            ) from None
        return bytes(body).decode()

    return await asyncio.to_thread(get)


async def run_step(
    client: RayJobsClient,
    run: StepRun,
    run_id: str,
    *,
    retries: int = 0,
    deadline: float | None = None,
    deadline_reason: str = REASON_DEADLINE_EXCEEDED,
    extra_parameters: dict[str, str] | None = None,
    poll_interval: float = 1.0,
    on_log: LogSink | None = None,
    on_event: EventSink | None = None,
) -> StepResult:
    """Submit one step (and up to ``retries`` more attempts) and follow it to the end.

    ``deadline`` is a ``time.monotonic()`` instant: the step's own ``activeDeadlineSeconds`` is
    counted from its start and the earlier of the two wins; past it the job is stopped and the
    step fails with reason ``DeadlineExceeded``.
    """
    result = StepResult(name=run.step)
    script = run.script if run.script is not None else await fetch_script(run.scriptLocation or "")
    command = entrypoint(script, run.all_parameters(run_id, extra_parameters))
    started = time.monotonic()
    if run.activeDeadlineSeconds:
        own = started + run.activeDeadlineSeconds
        deadline = own if deadline is None else min(deadline, own)
    for attempt in range(1, retries + 2):
        result.attempts = attempt
        sid = run.submission_id(run_id) + (f"-{attempt}" if attempt > 1 else "")
        result.submission_id = sid
        result.state = STEP_RUNNING
        result.start_time = result.start_time or datetime.now(UTC)
        result.end_time = None
        result.message = ""
        if on_event:
            on_event(result)
        await client.submit(
            command,
            submission_id=sid,
            runtime_env=run.runtimeEnv,
            metadata={"pipeline": run.pipeline, "step": run.step, "run_id": run_id},
        )
        info = await _follow(client, sid, deadline, poll_interval, on_log, run.step)
        result.end_time = info.end_time or datetime.now(UTC)
        if info.status == SUCCEEDED:
            result.state = STEP_SUCCEEDED
            result.message = info.message
            break
        if info.status == "DEADLINE":
            result.state = STEP_STOPPED
            result.reason = deadline_reason
            result.message = f"stopped after its deadline ({deadline_reason}); {info.message}"
            break
        result.state = STEP_FAILED
        result.reason = REASON_STEP_FAILED
        result.message = info.message or f"Ray reported {info.status}"
        if attempt <= retries and on_event:
            on_event(result)
    if on_event:
        on_event(result)
    return result


async def _follow(
    client: RayJobsClient,
    sid: str,
    deadline: float | None,
    poll_interval: float,
    on_log: LogSink | None,
    step: str,
) -> JobInfo:
    """Poll until the job ends or the deadline passes (then stop it; status ``DEADLINE``)."""
    tail: asyncio.Task[None] | None = None
    if on_log is not None:
        tail = asyncio.create_task(_tail(client, sid, step, on_log))
    try:
        while True:
            info = await client.info(sid)
            if info.status in TERMINAL_STATES:
                if tail is not None:
                    # The log stream ends with the job; give it a moment to flush the last lines.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(tail), 5)
                return info
            if deadline is not None and time.monotonic() >= deadline:
                stopped = await _stop(client, sid)
                return JobInfo(
                    submission_id=sid,
                    status="DEADLINE",
                    message=f"Ray job {sid} {stopped.status}",
                    start_time=stopped.start_time,
                    end_time=stopped.end_time,
                )
            await asyncio.sleep(poll_interval)
    finally:
        if tail is not None and not tail.done():
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await tail


async def _stop(client: RayJobsClient, sid: str) -> JobInfo:
    """Ask Ray to stop the job and wait (bounded) until it says it ended."""
    await client.stop(sid)
    end = time.monotonic() + STOP_WAIT_SECONDS
    info = await client.info(sid)
    while info.status not in TERMINAL_STATES and time.monotonic() < end:
        await asyncio.sleep(0.5)
        info = await client.info(sid)
    return info


async def _tail(client: RayJobsClient, sid: str, step: str, on_log: LogSink) -> None:
    try:
        async for chunk in client.tail_logs(sid):
            on_log(step, chunk)
    except Exception as exc:  # noqa: BLE001 - logs are best effort; the state comes from info()
        on_log(step, f"[log stream ended: {exc}]\n")


async def run_pipeline(
    client: RayJobsClient,
    pipeline: RayPipelineResource,
    *,
    base_dir: Path | None,
    run_id: str | None = None,
    extra_parameters: dict[str, str] | None = None,
    poll_interval: float = 1.0,
    on_log: LogSink | None = None,
    on_event: EventSink | None = None,
    timeout_seconds: float | None = None,
) -> PipelineResult:
    """Run every step in order; stop at the first failure or at the pipeline's timeout.

    ``timeout_seconds`` overrides the spec's ``timeoutMinutes`` (e.g. for a quick trial).
    """
    spec = pipeline.spec
    run_id = run_id or new_run_id()
    runs = step_runs(pipeline.name, spec, base_dir)
    result = PipelineResult(
        name=pipeline.name, run_id=run_id, steps=[StepResult(name=s.name) for s in spec.steps]
    )
    timeout = timeout_seconds if timeout_seconds is not None else spec.timeout_seconds
    deadline = time.monotonic() + timeout
    for index, (step, run) in enumerate(zip(spec.steps, runs, strict=True)):
        if time.monotonic() >= deadline:
            step_result = StepResult(
                name=step.name, state=STEP_STOPPED, reason=REASON_DEADLINE_EXCEEDED,
                message="not started: the pipeline's timeout had passed",
            )
        else:
            step_result = await run_step(
                client,
                run,
                run_id,
                retries=step.retries,
                deadline=deadline,
                extra_parameters=extra_parameters,
                poll_interval=poll_interval,
                on_log=on_log,
                on_event=on_event,
            )
        result.steps[index] = step_result
        if step_result.state == STEP_SUCCEEDED:
            continue
        result.state = PIPELINE_FAILED
        pipeline_timed_out = time.monotonic() >= deadline - 0.5
        if step_result.reason == REASON_DEADLINE_EXCEEDED and pipeline_timed_out:
            result.reason = REASON_DEADLINE_EXCEEDED
            result.message = (
                f"pipeline timeout ({timeout:g} s) exceeded during step "
                f"{step.name!r}: its Ray job was stopped"
            )
        else:
            result.reason = step_result.reason or REASON_STEP_FAILED
            result.message = f"step {step.name!r} failed: {step_result.message}"
        for later in result.steps[index + 1 :]:
            later.state = STEP_SKIPPED
            later.message = f"not run: step {step.name!r} did not succeed"
            if on_event:
                on_event(later)
        break
    return result
