"""`ray-operator pipeline ...` commands."""

import typer

app = typer.Typer(help="Pipeline commands.", no_args_is_help=True)
