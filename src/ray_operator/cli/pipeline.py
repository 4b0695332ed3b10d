"""`ray-operator pipeline ...` commands: validate, run, export-asl, run-step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ray_operator.api.pipeline import PipelineSpecError, RayPipelineResource, load_pipeline
from ray_operator.pipelines.asl import AslOptions, build_state_machine, to_json

app = typer.Typer(help="Pipeline commands.", no_args_is_help=True)
err = Console(stderr=True)

FileArg = Annotated[
    Path, typer.Argument(help="Pipeline file (a RayPipeline manifest).", show_default=False)
]


def _load(path: Path) -> RayPipelineResource:
    try:
        return load_pipeline(path)
    except PipelineSpecError as exc:
        err.print(f"[red]{exc}[/red]", markup=True, highlight=False)
        raise typer.Exit(2) from None


@app.command()
def validate(file: FileArg) -> None:
    """Check a pipeline file and say what it would run."""
    pipeline = _load(file)
    from ray_operator.pipelines.step import step_runs

    try:
        step_runs(pipeline.name, pipeline.spec, file.parent)
    except PipelineSpecError as exc:
        err.print(f"[red]{exc}[/red]", markup=True, highlight=False)
        raise typer.Exit(2) from None
    spec = pipeline.spec
    steps = " -> ".join(s.name for s in spec.steps)
    typer.echo(
        f"{file}: valid pipeline {pipeline.name!r}: {steps}; timeout {spec.timeoutMinutes} min; "
        f"export path {spec.exportPath}; PVC {spec.pvcName or 'none'}; "
        f"bucket {spec.dataBucket or 'none'}"
    )


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
        err.print(f"[red]{exc}[/red]", markup=True, highlight=False)
        raise typer.Exit(2) from None
    typer.echo(to_json(definition))
