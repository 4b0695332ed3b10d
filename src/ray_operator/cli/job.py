"""`ray-operator job ...` commands."""

import typer

app = typer.Typer(help="Job commands.", no_args_is_help=True)
