"""The job runner: stage -> choose and persist the id -> submit -> follow -> archive.

A runner killed at any moment and started again resumes the same job: the submission id is
stored before Ray hears of it, and Ray answering "already exists" counts as submitted. The status
keys it writes are the original's (``status.jobStatus``, ``status.submitTime``, ...), with times in
RFC 3339 UTC, and only the keys that changed are written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Final, TypeVar

from ray_operator.api.jobdata import (
    KEY_KILL,
    STATUS_END_TIME,
    STATUS_JOB,
    STATUS_LOGS_URL,
    STATUS_MESSAGE,
    STATUS_REASON,
    STATUS_START_TIME,
    STATUS_SUBMIT_TIME,
    ConfigError,
    S3Location,
)
from ray_operator.jobs.archive import archive
from ray_operator.jobs.config import (
    JobConfig,
    RunnerEnvironment,
    parse_bool,
    parse_config,
)
from ray_operator.jobs.entrypoint import build_entrypoint, standard_parameters
from ray_operator.jobs.object_store import ObjectStore, ObjectStoreError
from ray_operator.jobs.ray_api import (
    FAILED,
    STOPPED,
    SUCCEEDED,
    TERMINAL_STATES,
    JobInfo,
    RayApiError,
    RayJobNotFoundError,
    RayJobsClient,
    RayUnreachableError,
)
from ray_operator.jobs.script_source import SourceError, stage
from ray_operator.jobs.status_store import StatusStore, new_submission_id

log = logging.getLogger("ray_operator.jobs")

SUBMITTED: Final = "SUBMITTED"
REASON_DEADLINE: Final = "DeadlineExceeded"
REASON_INVALID_CONFIG: Final = "InvalidConfig"
REASON_SOURCE: Final = "SourceUnavailable"
REASON_UNREACHABLE: Final = "RayUnreachable"
REASON_LOST: Final = "JobLost"
REASON_ARCHIVE: Final = "ArchiveFailed"
REASON_STOPPED: Final = "Stopped"
REASON_SUBMIT: Final = "SubmitFailed"
LOG_CONTENT_TYPE: Final = "text/plain; charset=utf-8"

# Test hook: the runner SIGKILLs itself at this step, to prove a restart never submits twice.
ENV_CRASH_AT: Final = "RAY_JOB_RUNNER_CRASH_AT"
STEP_AFTER_ID: Final = "after-id"
STEP_AFTER_SUBMIT: Final = "after-submit"

# The script goes in a subdirectory of the job's working directory: Ray puts the working directory
# on every worker's sys.path, where a script named like a stdlib module (the original's example
# is `code.py`) would be imported by Ray itself and run again, and the job would never start.
SCRIPT_DIR: Final = "job"

_T = TypeVar("_T")


def rfc3339(moment: datetime | None = None) -> str:
    """``2026-11-23T10:00:00Z``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime | None:
    """The inverse of :func:`rfc3339`; None for anything else (the original's own format)."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


class JobFailedError(Exception):
    """The runner gives up on the job: FAILED with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, RayUnreachableError):
        return True
    # The head answers 5xx while its job agent starts, or behind a proxy while it restarts.
    return isinstance(exc, RayApiError) and (
        exc.status in (502, 503, 504) or "No available agent" in exc.text
    )


class JobRunner:
    """Runs one job described by a :class:`StatusStore` (the ConfigMap) to its end."""

    def __init__(
        self,
        store: StatusStore,
        name: str,
        namespace: str,
        environment: RunnerEnvironment | None = None,
        crash_at: str = "",
        echo_logs: bool = True,
    ) -> None:
        self.store = store
        self.name = name
        self.namespace = namespace
        self.environment = environment
        self.crash_at = crash_at or os.environ.get(ENV_CRASH_AT, "")
        self.echo_logs = echo_logs
        self.status: dict[str, str] = {}

    async def _write(self, values: dict[str, str]) -> None:
        self.status.update(values)
        await self.store.write(values)

    def _checkpoint(self, step: str) -> None:
        if self.crash_at == step:
            log.warning("test hook %s=%s: killing the runner", ENV_CRASH_AT, step)
            os.kill(os.getpid(), signal.SIGKILL)

    def _ray_token(self, config: JobConfig) -> str | None:
        path = self.environment.ray_token_file if self.environment else None
        if path is not None and path.is_file():
            return path.read_text().strip() or None
        if config.ray_secret:
            raise JobFailedError(
                REASON_INVALID_CONFIG,
                f"resourcesecret={config.ray_secret!r} is set but no token is mounted at {path}",
            )
        return None

    def _object_store(self, config: JobConfig) -> ObjectStore:
        creds = self.environment.s3_credentials_dir if self.environment else None
        return ObjectStore(config.s3, creds)

    async def run(self) -> int:
        """Run or resume the job; 0 when it SUCCEEDED, 1 otherwise."""
        data = await self.store.read()
        self.status = {k: v for k, v in data.items() if k.startswith("status.")}
        try:
            config = parse_config(self.name, self.namespace, data)
        except ConfigError as exc:
            await self._fail(REASON_INVALID_CONFIG, str(exc))
            return 1
        if data.get(STATUS_JOB) in TERMINAL_STATES and (
            data.get(STATUS_LOGS_URL) or not config.upload_bucket
        ):
            log.info("job %s already ended: %s", config.name, data[STATUS_JOB])
            return 0 if data[STATUS_JOB] == SUCCEEDED else 1
        try:
            token = self._ray_token(config)
        except JobFailedError as exc:
            await self._fail(exc.reason, exc.message)
            return 1
        client = RayJobsClient(config.address, token=token)
        try:
            return await self._run(config, client, data)
        except JobFailedError as exc:
            await self._fail(exc.reason, exc.message)
            return 1
        finally:
            await client.aclose()

    async def _run(self, config: JobConfig, client: RayJobsClient, data: dict[str, str]) -> int:
        store = self._object_store(config)
        if not data.get(STATUS_SUBMIT_TIME):
            if config.kill:
                await self._write(
                    {
                        STATUS_JOB: STOPPED,
                        STATUS_REASON: REASON_STOPPED,
                        STATUS_MESSAGE: "kill was set before the job was submitted",
                    }
                )
                return 1
            try:
                staged = await stage(config, store)
                params = {**standard_parameters(config), **staged.parameters}
                entrypoint = build_entrypoint(f"{SCRIPT_DIR}/{staged.script_name}", params)
            except ConfigError as exc:
                raise JobFailedError(REASON_INVALID_CONFIG, str(exc)) from None
            except (SourceError, ObjectStoreError) as exc:
                raise JobFailedError(REASON_SOURCE, str(exc)) from None
            submission_id = config.submission_id or await self.store.claim_id(
                new_submission_id(config.name)
            )
            self._checkpoint(STEP_AFTER_ID)
            log.info("submitting job %s as %s to %s", config.name, submission_id, config.address)
            working_dir = await self._retry(
                config,
                lambda: client.upload_working_dir(
                    {f"{SCRIPT_DIR}/{staged.script_name}": staged.script}
                ),
            )
            runtime_env = {**staged.runtime_env, "working_dir": working_dir}
            try:
                await self._retry(
                    config,
                    lambda: client.submit(
                        entrypoint,
                        submission_id=submission_id,
                        runtime_env=runtime_env,
                        metadata={"job-name": config.name, "namespace": config.namespace},
                    ),
                )
            except RayApiError as exc:
                raise JobFailedError(
                    REASON_SUBMIT, f"submitting to {config.address}: {exc.message}"
                ) from None
            self._checkpoint(STEP_AFTER_SUBMIT)
            await self._write({STATUS_JOB: SUBMITTED, STATUS_SUBMIT_TIME: rfc3339()})
        else:
            submission_id = config.submission_id
            log.info("resuming job %s (%s)", config.name, submission_id)
        return await self.follow(config, client, store, submission_id)

    async def _retry(self, config: JobConfig, call: Callable[[], Awaitable[_T]]) -> _T:
        """Retry while the job API is unreachable, with backoff, up to the configured time."""
        started = time.monotonic()
        delay = 0.25
        while True:
            try:
                return await call()
            except (RayUnreachableError, RayApiError) as exc:
                if not _retryable(exc):
                    raise
                waited = time.monotonic() - started
                if waited >= config.unreachable_timeout:
                    raise JobFailedError(
                        REASON_UNREACHABLE,
                        f"Ray job API at {config.address} unreachable for {waited:.0f}s "
                        f"(unreachableTimeoutSeconds={config.unreachable_timeout:g}): "
                        f"{getattr(exc, 'error', None) or exc}",
                    ) from None
                log.warning("Ray job API at %s: %s; retrying in %.1fs", config.address, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def follow(
        self, config: JobConfig, client: RayJobsClient, store: ObjectStore, submission_id: str
    ) -> int:
        """Poll the job until it ends, honoring ``kill`` and the deadline; then archive it."""
        wake = asyncio.Event()
        # The log stream's end also wakes the poller, so the terminal state shows at once.
        tail = asyncio.create_task(self._echo_logs(client, submission_id, wake))
        submitted = parse_rfc3339(self.status.get(STATUS_SUBMIT_TIME, "")) or datetime.now(UTC)
        stop_reason = ""
        last_status = self.status.get(STATUS_JOB, SUBMITTED)
        try:
            while True:
                data = await self.store.read()
                if not stop_reason and _kill_requested(data):
                    stop_reason = REASON_STOPPED
                    log.info("kill requested: stopping %s", submission_id)
                    await self._retry(config, lambda: client.stop(submission_id))
                deadline = config.active_deadline_seconds
                if (
                    not stop_reason
                    and deadline is not None
                    and (datetime.now(UTC) - submitted).total_seconds() > deadline
                ):
                    stop_reason = REASON_DEADLINE
                    log.info("activeDeadlineSeconds=%g exceeded: stopping", deadline)
                    await self._retry(config, lambda: client.stop(submission_id))
                try:
                    info = await self._retry(config, lambda: client.info(submission_id))
                except JobFailedError as exc:
                    raise JobFailedError(
                        REASON_LOST,
                        f"lost the Ray head while job {submission_id} was {last_status}: "
                        f"{exc.message}",
                    ) from None
                except RayJobNotFoundError:
                    raise JobFailedError(
                        REASON_LOST,
                        f"job {submission_id} is no longer known to Ray at {config.address} "
                        "(was the head restarted?)",
                    ) from None
                last_status = info.status
                if info.terminal:
                    return await self._finish(config, client, store, info, stop_reason, tail)
                await self._write(_status_of(info))
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), config.interval)
                except TimeoutError:
                    pass
        finally:
            tail.cancel()

    async def _echo_logs(
        self, client: RayJobsClient, submission_id: str, wake: asyncio.Event
    ) -> None:
        """Stream the job's log to our own output; its end means the job ended: poll at once."""
        try:
            async for chunk in client.tail_logs(submission_id):
                if self.echo_logs:
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
        except (RayApiError, RayUnreachableError) as exc:
            log.debug("log stream ended: %s", exc)
        finally:
            wake.set()

    async def _finish(
        self,
        config: JobConfig,
        client: RayJobsClient,
        store: ObjectStore,
        info: JobInfo,
        stop_reason: str,
        tail: asyncio.Task[None],
    ) -> int:
        status = _status_of(info)
        message = info.message
        if stop_reason == REASON_DEADLINE:
            status[STATUS_JOB] = FAILED
            status[STATUS_REASON] = REASON_DEADLINE
            message = (
                f"activeDeadlineSeconds={config.active_deadline_seconds:g} exceeded; "
                f"the Ray job was stopped ({info.status})"
            )
        elif info.status == STOPPED:
            status[STATUS_REASON] = REASON_STOPPED
        # The terminal state first: the resource shows it without waiting for the upload.
        await self._write({**status, STATUS_MESSAGE: message})
        if self.echo_logs:  # let the log stream print its last lines into the Pod's log
            await asyncio.wait({tail}, timeout=3)
        # A long log's echo may still be behind: it must not stream beside the upload's own.
        tail.cancel()
        ok = status[STATUS_JOB] == SUCCEEDED
        if config.upload_bucket:
            result = await archive(
                config, store, lambda at: self._upload_log(config, client, store, info, at)
            )
            extra: dict[str, str] = {}
            if result.logs_url:
                message = f"{message}; logs at {result.logs_url}".lstrip("; ")
                extra[STATUS_LOGS_URL] = result.logs_url
            if result.files:
                message += f"; {len(result.files)} file(s) uploaded"
            if result.errors:
                message += "; " + "; ".join(result.errors)
                extra[STATUS_REASON] = status.get(STATUS_REASON) or REASON_ARCHIVE
                ok = False
            await self._write({**extra, STATUS_MESSAGE: message})
        log.info("job %s ended: %s %s", config.name, status[STATUS_JOB], message)
        return 0 if ok else 1

    async def _upload_log(
        self,
        config: JobConfig,
        client: RayJobsClient,
        store: ObjectStore,
        info: JobInfo,
        at: S3Location,
    ) -> None:
        """Stream the ended job's whole log from the job API into S3, never holding it whole.

        The tail stream of an ended job sends the log from its start and closes; if the job API
        goes away meanwhile, the upload starts again (while the runner's retry budget lasts).
        """

        async def chunks() -> AsyncIterator[bytes]:
            async for text in client.tail_logs(info.submission_id):
                yield text.encode()

        try:
            await self._retry(config, lambda: store.put_stream(at, chunks(), LOG_CONTENT_TYPE))
        except (JobFailedError, RayApiError) as exc:
            detail = exc.message if isinstance(exc, JobFailedError) else str(exc)
            raise ObjectStoreError(
                f"the log could not be read from the job API: {detail}"
            ) from None

    async def _fail(self, reason: str, message: str) -> None:
        log.error("job %s failed: %s", self.name, message)
        values = {STATUS_JOB: FAILED, STATUS_REASON: reason, STATUS_MESSAGE: message}
        if not self.status.get(STATUS_END_TIME):
            values[STATUS_END_TIME] = rfc3339()
        await self._write(values)


def _kill_requested(data: dict[str, str]) -> bool:
    try:
        return parse_bool(KEY_KILL, data.get(KEY_KILL, "false"))
    except ConfigError:
        return False


def _status_of(info: JobInfo) -> dict[str, str]:
    status = {STATUS_JOB: info.status}
    if info.start_time:
        status[STATUS_START_TIME] = rfc3339(info.start_time)
    if info.end_time:
        status[STATUS_END_TIME] = rfc3339(info.end_time)
    if info.message and not info.terminal:
        status[STATUS_MESSAGE] = info.message
    return status
