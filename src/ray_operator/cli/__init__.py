"""The ``ray-operator`` command: one typer app, one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from ray_operator import __version__
from ray_operator.cli import dashboard, job, operator, pipeline, render

app = typer.Typer(
    name="ray-operator",
    help="Ray on Kubernetes: the operator, jobs and pipelines.",
    no_args_is_help=True,
    add_completion=False,
    # Help and messages are plain text: "[/tmp]" in a value is printed, not read as markup.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ray-operator {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="The version."),
    ] = False,
) -> None:
    """Ray on Kubernetes: the operator, jobs and pipelines."""
operator.register(app)
render.register(app)
dashboard.register(app)
app.add_typer(job.app, name="job")
app.add_typer(pipeline.app, name="pipeline")


def main() -> None:
    """Console-script entry point."""
    app()
