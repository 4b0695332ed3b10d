"""The ``ray-operator`` command: one typer app, one module per command group."""

from __future__ import annotations

import typer

from ray_operator.cli import job, operator, pipeline, render

app = typer.Typer(
    name="ray-operator",
    help="Ray on Kubernetes: the operator, jobs and pipelines.",
    no_args_is_help=True,
    add_completion=False,
)
operator.register(app)
render.register(app)
app.add_typer(job.app, name="job")
app.add_typer(pipeline.app, name="pipeline")


def main() -> None:
    """Console-script entry point."""
    app()
