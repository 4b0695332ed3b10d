"""`ray-operator pipeline ...` commands: validate, manifest, run, export-asl, run-step."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ray_operator.api.pipeline import (
    STEP_RUNNING,
    STEP_SKIPPED,
    STEP_SUCCEEDED,
    PipelineSpecError,
    RayPipelineResource,
    load_pipeline,
    parse_pipeline,
)
from ray_operator.api.pipeline_step import ENV_ADDRESS, ENV_INPUT, ENV_RUN_ID, ENV_STEP, StepRun
from ray_operator.jobs.ray_api import RayApiError, RayJobsClient, RayUnreachableError
from ray_operator.pipelines.asl import AslOptions, build_state_machine, to_json
from ray_operator.pipelines.in_cluster import cluster_manifests, is_local_file, pipeline_document
from ray_operator.pipelines.local import PipelineResult, StepResult, run_pipeline, run_step

app = typer.Typer(help="Pipeline commands.", no_args_is_help=True)
err = Console(stderr=True)

FileArg = Annotated[
    Path, typer.Argument(help="Pipeline file (a RayPipeline manifest).", show_default=False)
]


def _load(path: Path, invalid_exit: int = 2) -> RayPipelineResource:
    try:
        return load_pipeline(path)
    except PipelineSpecError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(invalid_exit) from None


@app.command()
def validate(file: FileArg) -> None:
    """Check a pipeline file and say what it would run; exit 1 when it is invalid."""
    pipeline = _load(file, invalid_exit=1)  # as `ray-operator validate`: 1 invalid, 2 usage
    from ray_operator.api.pipeline import resolve_script

    try:
        for step in pipeline.spec.steps:
            if step.scriptFrom is None:  # a ConfigMap is only in the cluster
                resolve_script(step, file.parent)
    except PipelineSpecError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None
    spec = pipeline.spec
    for index, step in enumerate(spec.steps):
        if step.scriptLocation is None and step.scriptFrom is None:
            typer.echo(
                f"{file}: warning: spec.steps[{index}] ({step.name}): script read as "
                f"{step.script_location} (guessed); write scriptLocation: "
                f"{step.script_location} to say so",
                err=True,
            )
    steps = " -> ".join(s.name for s in spec.steps)
    typer.echo(
        f"{file}: valid pipeline {pipeline.name!r}: {steps}; timeout {spec.timeoutMinutes} min; "
        f"export path {spec.exportPath}; PVC {spec.pvcName or 'none'}; "
        f"bucket {spec.dataBucket or 'none'}"
    )


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the scripts) as ``|`` blocks, readable and diffable."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _string)


@app.command()
def manifest(
    file: FileArg,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="Run on this Ray instead of spec.cluster.")
    ] = None,
) -> None:
    """Print the pipeline as a RayPipeline manifest for the cluster, scripts written inline.

    Steps whose script is a file beside the pipeline file cannot run in a cluster as they are
    (the file is not there): their text goes into the manifest. Then
    ``ray-operator pipeline manifest pipeline.yaml | kubectl apply -n NS -f -``.
    """
    from ray_operator.api.pipeline import resolve_script

    pipeline = _load(file)
    document = pipeline_document(pipeline, cluster)
    spec = document["spec"]
    try:
        for index, step in enumerate(pipeline.spec.steps):
            if step.script_is_inline or is_local_file(step.script_location, step.script):
                text = resolve_script(step, file.parent) or ""
                spec["steps"][index]["script"] = text if text.endswith("\n") else text + "\n"
                spec["steps"][index]["scriptLocation"] = "inline"
    except PipelineSpecError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(2) from None
    typer.echo(yaml.dump(document, Dumper=_BlockDumper, sort_keys=False), nl=False)


@app.command()
def apply(
    file: FileArg,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", "-n", help="Where to apply (default: the context's)."),
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="Run on this Ray instead of spec.cluster.")
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="The kubeconfig context (default: its current one).")
    ] = None,
) -> None:
    """Apply the pipeline to the cluster: a RayPipeline, and a ConfigMap of its script files.

    Steps whose script is a file beside the pipeline file read it from the ConfigMap
    ``<pipeline>-scripts`` (scriptFrom), owned by the RayPipeline: deleting the pipeline
    deletes it. Uses your kubeconfig (KUBECONFIG, else ~/.kube/config).
    """
    pipeline = _load(file)
    try:
        manifests = cluster_manifests(pipeline, file.parent, cluster)
    except PipelineSpecError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(2) from None
    from ray_operator.cli.apply import ApplyError, apply_pipeline

    try:
        for line in asyncio.run(apply_pipeline(manifests, namespace, context)):
            typer.echo(line)
    except ApplyError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None


@app.command("export-asl")
def export_asl(
    file: FileArg,
    runner_image: Annotated[
        str, typer.Option(help="Container image with the ray-operator command.")
    ] = "ray-operator:latest",
    cluster_name: Annotated[
        str | None, typer.Option(help="EKS cluster name [default: $.cluster.name of the input].")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(help="EKS API endpoint [default: $.cluster.endpoint of the input]."),
    ] = None,
    certificate_authority: Annotated[
        str | None,
        typer.Option(
            help="EKS CA data, base64 [default: $.cluster.certificateAuthority of the input]."
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(help="Namespace of the Jobs [default: $.cluster.namespace of the input]."),
    ] = None,
    service_account: Annotated[
        str | None, typer.Option(help="Service account of the runner pods.")
    ] = None,
    timeout_minutes: Annotated[
        int | None, typer.Option(min=1, help="Override the pipeline's timeoutMinutes.")
    ] = None,
    pvc_name: Annotated[str | None, typer.Option(help="Override the pipeline's pvcName.")] = None,
    export_path: Annotated[
        str | None, typer.Option(help="Override the pipeline's exportPath.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray job API URL [default: from the pipeline or input].")
    ] = None,
) -> None:
    """Print the pipeline as an AWS Step Functions definition (JSON only, on stdout)."""
    pipeline = _load(file)
    try:
        options = AslOptions(
            cluster_name=cluster_name,
            endpoint=endpoint,
            certificate_authority=certificate_authority,
            namespace=namespace,
            runner_image=runner_image,
            service_account=service_account,
            timeout_seconds=timeout_minutes * 60 if timeout_minutes else None,
            pvc_name=pvc_name,
            export_path=export_path,
            ray_address=ray_address,
        )
        definition = build_state_machine(pipeline, options, base_dir=file.parent)
    except (ValueError, PipelineSpecError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(2) from None
    typer.echo(to_json(definition))


def _parse_params(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"--param {item!r} is not accepted: write key=value")
            raise typer.Exit(2)
        out[key] = value
    return out


def _print_summary(console: Console, result: PipelineResult) -> None:
    table = Table(title=f"pipeline {result.name} (run {result.run_id})")
    for column in ("step", "state", "attempts", "duration", "submission id", "message"):
        table.add_column(column)
    colours = {STEP_SUCCEEDED: "green", STEP_SKIPPED: "yellow"}
    for step in result.steps:
        colour = colours.get(step.state, "red")
        duration = f"{step.duration:.1f}s" if step.duration is not None else "-"
        table.add_row(
            step.name,
            f"[{colour}]{step.state}[/{colour}]",
            str(step.attempts or "-"),
            duration,
            step.submission_id or "-",
            escape(step.message[-300:]),
        )
    console.print(table)
    if result.succeeded:
        console.print(f"[green]pipeline {result.name} succeeded[/green]")
    else:
        console.print(
            f"[red]pipeline {result.name} failed ({result.reason}): {escape(result.message)}[/red]"
        )


@app.command()
def run(
    file: FileArg,
    address: Annotated[
        str, typer.Option(envvar="RAY_ADDRESS", help="Ray job API URL (dashboard, port 8265).")
    ],
    token: Annotated[
        str | None,
        typer.Option(envvar="RAY_AUTH_TOKEN", help="Ray auth token, when the cluster needs one."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="key=value added to every step's parameters."),
    ] = None,
    export_path: Annotated[
        str | None, typer.Option(help="Override the pipeline's exportPath.")
    ] = None,
    data_bucket: Annotated[
        str | None, typer.Option(help="Override the pipeline's dataBucket.")
    ] = None,
    timeout_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Override the pipeline's timeoutMinutes.")
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id [default: time + random].")] = None,
    logs: Annotated[bool, typer.Option(help="Stream each step's log.")] = True,
    poll_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 1.0,
) -> None:
    """Run the pipeline's steps one after another on a Ray cluster; exit 1 if one fails."""
    pipeline = _load(file)
    overrides: dict[str, object] = {}
    if export_path is not None:
        overrides["exportPath"] = export_path
    if data_bucket is not None:
        overrides["dataBucket"] = data_bucket
    if overrides:
        try:
            pipeline = parse_pipeline(
                {**pipeline.model_dump(exclude_none=True),
                 "spec": {**pipeline.spec.model_dump(exclude_none=True), **overrides}},
                str(file),
            )
        except PipelineSpecError as exc:
            err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
            raise typer.Exit(2) from None
    extra = _parse_params(param or [])
    console = Console()

    def on_event(step: StepResult) -> None:
        if step.state == STEP_RUNNING:
            console.print(
                f"[bold]▶ {step.name}[/bold] attempt {step.attempts}: {step.submission_id}"
            )
        elif step.state == STEP_SKIPPED:
            console.print(f"[yellow]- {step.name}: {escape(step.message)}[/yellow]")
        else:
            duration = f" in {step.duration:.1f}s" if step.duration is not None else ""
            colour = "green" if step.state == STEP_SUCCEEDED else "red"
            console.print(
                f"[{colour}]■ {step.name}: {step.state}{duration}[/{colour}]"
                + (f" {escape(step.message[-500:])}" if step.state != STEP_SUCCEEDED else "")
            )

    def on_log(step: str, chunk: str) -> None:
        for line in chunk.splitlines():
            console.print(f"[dim]{step} |[/dim] {escape(line)}", highlight=False)

    async def go() -> PipelineResult:
        async with RayJobsClient(address, token=token) as client:
            return await run_pipeline(
                client,
                pipeline,
                base_dir=file.parent,
                run_id=run_id,
                extra_parameters=extra,
                poll_interval=poll_interval,
                on_log=on_log if logs else None,
                on_event=on_event,
                timeout_seconds=timeout_minutes * 60 if timeout_minutes else None,
            )

    try:
        result = asyncio.run(go())
    except (RayUnreachableError, RayApiError, RuntimeError, PipelineSpecError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    _print_summary(console, result)
    raise typer.Exit(0 if result.succeeded else 1)


@app.command("run-step", hidden=True)
def run_step_command(
    poll_interval: Annotated[float, typer.Option(min=0.1)] = 5.0,
) -> None:
    """Run one step described by the environment (the Step Functions Job's container).

    Reads RAY_PIPELINE_STEP (the step as JSON), RAY_PIPELINE_RUN_ID, RAY_ADDRESS,
    RAY_PIPELINE_INPUT (the execution input: its `parameters` map is added to the step's) and
    RAY_PIPELINE_STARTED (with the step's pipelineTimeoutSeconds, the whole run's deadline).
    """
    env = os.environ
    try:
        step = StepRun.model_validate_json(env[ENV_STEP])
        run_id = env[ENV_RUN_ID]
        address = env[ENV_ADDRESS]
    except KeyError as exc:
        err.print(f"environment variable {exc.args[0]} is missing: the Job must set it")
        raise typer.Exit(2) from None
    except ValueError as exc:
        err.print(f"{ENV_STEP} is not a valid step: {exc}")
        raise typer.Exit(2) from None
    extra: dict[str, str] = {}
    raw_input = env.get(ENV_INPUT, "")
    if raw_input:
        try:
            given = json.loads(raw_input).get("parameters") or {}
        except (ValueError, AttributeError):
            err.print(f"{ENV_INPUT} is not a JSON object: {raw_input[:200]!r}")
            raise typer.Exit(2) from None
        extra = {str(k): str(v) for k, v in given.items()}
    deadline = None
    started = env.get("RAY_PIPELINE_STARTED")
    if started and step.pipelineTimeoutSeconds:
        begun = datetime.fromisoformat(started.replace("Z", "+00:00"))
        left = step.pipelineTimeoutSeconds - (datetime.now(UTC) - begun).total_seconds()
        deadline = time.monotonic() + max(left, 0.0)

    def on_log(_: str, chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    async def go() -> StepResult:
        async with RayJobsClient(address, token=env.get("RAY_AUTH_TOKEN") or None) as client:
            return await run_step(
                client, step, run_id, deadline=deadline, extra_parameters=extra,
                poll_interval=poll_interval, on_log=on_log,
            )

    try:
        result = asyncio.run(go())
    except (RayUnreachableError, RayApiError, RuntimeError) as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    typer.echo(f"step {step.step}: {result.state} {result.message}".rstrip())
    raise typer.Exit(0 if result.state == STEP_SUCCEEDED else 1)
