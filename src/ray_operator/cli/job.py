"""`ray-operator job ...`: submit, follow, stop and list Ray jobs through the job API."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from ray_operator.jobs.entrypoint import build_entrypoint
from ray_operator.jobs.ray_api import (
    SUCCEEDED,
    JobInfo,
    RayApiError,
    RayJobsClient,
    RayUnreachableError,
)
from ray_operator.jobs.runner import SCRIPT_DIR
from ray_operator.jobs.script_source import pip_requirements

app = typer.Typer(help="Submit, follow, stop and list Ray jobs.", no_args_is_help=True)

_T = TypeVar("_T")

AddressOption = Annotated[
    str,
    typer.Option(
        "--address", "-a", envvar="RAY_ADDRESS", help="Ray job API URL, e.g. http://head:8265."
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="RAY_AUTH_TOKEN", help="Ray auth token.", show_default=False),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        envvar="RAY_AUTH_TOKEN_PATH",
        help="File holding the Ray auth token (e.g. the cluster's Secret, mounted or saved).",
        show_default=False,
    ),
]


def _token(token: str | None, token_file: Path | None) -> str | None:
    """The token given, else the one in ``token_file``; a file that cannot be read is an error."""
    if token or token_file is None:
        return token
    try:
        return token_file.read_text().strip() or None
    except OSError as exc:
        typer.echo(f"error: --token-file {str(token_file)!r}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None


def _run(address: str, token: str | None, work: Callable[[RayJobsClient], Awaitable[_T]]) -> _T:
    async def go() -> _T:
        async with RayJobsClient(address, token=token) as client:
            return await work(client)

    try:
        return asyncio.run(go())
    except (RayApiError, RayUnreachableError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _duration(info: JobInfo) -> str:
    if not info.start_time:
        return "-"
    end = info.end_time or datetime.now(UTC)
    return f"{(end - info.start_time).total_seconds():.1f}s"


def _final_line(info: JobInfo) -> str:
    message = f" ({info.message})" if info.message else ""
    return f"Job {info.submission_id} {info.status} in {_duration(info)}{message}"


async def _follow(client: RayJobsClient, submission_id: str) -> JobInfo:
    async for chunk in client.tail_logs(submission_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    while True:  # the stream ends with the job; the state may lag by a moment
        info = await client.info(submission_id)
        if info.terminal:
            return info
        await asyncio.sleep(0.2)


def _parameters(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: write parameters as key=value", param_hint="-p")
        out[key] = value
    return out


@app.command()
def submit(
    script: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Python script.")],
    address: AddressOption,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="key=value, repeatable.")
    ] = None,
    pip: Annotated[
        list[str] | None, typer.Option("--pip", help="pip requirement, repeatable.")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream logs to the end.")] = False,
    submission_id: Annotated[
        str | None, typer.Option("--id", help="Submission id (default: generated).")
    ] = None,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Submit SCRIPT with key=value parameters; with --follow, stream its log to the end."""
    parameters = _parameters(param or [])
    sid = submission_id or f"{script.stem.replace('_', '-')}-{secrets.token_hex(4)}"
    entrypoint = build_entrypoint(f"{SCRIPT_DIR}/{script.name}", parameters)

    async def work(client: RayJobsClient) -> JobInfo | None:
        working_dir = await client.upload_working_dir(
            {f"{SCRIPT_DIR}/{script.name}": script.read_bytes()}
        )
        runtime_env: dict[str, object] = {"working_dir": working_dir}
        if pip:
            runtime_env["pip"] = pip_requirements("--pip", pip)
        await client.submit(entrypoint, submission_id=sid, runtime_env=runtime_env)
        typer.echo(f"Submitted {sid}", err=True)
        return await _follow(client, sid) if follow else None

    info = _run(address, _token(token, token_file), work)
    if info is None:
        typer.echo(sid)
        return
    typer.echo(_final_line(info), err=True)
    raise typer.Exit(0 if info.status == SUCCEEDED else 1)


@app.command()
def status(
    submission_id: str,
    address: AddressOption,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Show a job's state, times and message."""
    info = _run(address, _token(token, token_file), lambda c: c.info(submission_id))
    typer.echo(_final_line(info) if info.terminal else f"Job {submission_id} {info.status}")


@app.command()
def logs(
    submission_id: str,
    address: AddressOption,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream to the end.")] = False,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Print a job's log; with --follow, stream it until the job ends."""
    if not follow:
        text = _run(address, _token(token, token_file), lambda c: c.logs(submission_id))
        typer.echo(text, nl=False)
        return
    info = _run(address, _token(token, token_file), lambda c: _follow(c, submission_id))
    typer.echo(_final_line(info), err=True)


@app.command()
def stop(
    submission_id: str,
    address: AddressOption,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Stop a running job."""
    stopped = _run(address, _token(token, token_file), lambda c: c.stop(submission_id))
    typer.echo(f"Stopping {submission_id}" if stopped else f"{submission_id} had already ended")


@app.command("list")
def list_jobs(
    address: AddressOption, token: TokenOption = None, token_file: TokenFileOption = None
) -> None:
    """List the cluster's jobs, newest first."""
    jobs = _run(address, _token(token, token_file), lambda c: c.list())
    jobs.sort(key=lambda j: j.start_time or datetime.min.replace(tzinfo=UTC), reverse=True)
    typer.echo(f"{'SUBMISSION ID':<32} {'STATUS':<10} {'DURATION':>9}  ENTRYPOINT")
    for job in jobs:
        typer.echo(
            f"{job.submission_id:<32} {job.status:<10} {_duration(job):>9}  {job.entrypoint}"
        )
