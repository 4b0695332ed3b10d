"""``ray-operator run``, ``crds`` and ``validate``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from ray_operator.api.crd import all_crds
from ray_operator.api.validation import validate_ray


def run(
    context: Annotated[
        str | None, typer.Option(help="The kubeconfig context to use (default: its current one).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
) -> None:
    """Run the operator: watch Ray resources and keep their clusters as declared.

    Settings come from the environment: KUBECONFIG (else in-cluster), RAY_OPERATOR_NAMESPACES
    (comma-separated; empty: every namespace), RAY_OPERATOR_RAY_IMAGE,
    RAY_OPERATOR_DEFAULT_TEMPLATES, RAY_OPERATOR_RESYNC_SECONDS, RAY_OPERATOR_METRICS_PORT,
    RAY_OPERATOR_LEADER_ELECTION and RAY_OPERATOR_LEADER_ELECTION_NAMESPACE.
    """
    import asyncio
    import dataclasses

    from ray_operator.controllers.operator import run_operator
    from ray_operator.kube import CredentialsError
    from ray_operator.settings import Settings, SettingsError

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
        if context:
            settings = dataclasses.replace(settings, context=context)
        code = asyncio.run(run_operator(settings))
    except (SettingsError, CredentialsError) as exc:
        typer.echo(f"ray-operator run: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def crds() -> None:
    """Print the CustomResourceDefinitions of the project as YAML."""
    typer.echo(yaml.safe_dump_all(all_crds(), sort_keys=False), nl=False)


def validate(
    files: Annotated[list[Path], typer.Argument(help="Manifests (YAML, several documents each).")],
) -> None:
    """Check Ray manifests offline, with the operator's own rules; exit 1 on any error."""
    failed = False
    for path in files:
        try:
            documents: list[Any] = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except (OSError, yaml.YAMLError) as exc:
            typer.echo(f"{path}: cannot read: {exc}", err=True)
            failed = True
            continue
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("kind") != "Ray":
                continue
            name = doc.get("metadata", {}).get("name", "?")
            report = validate_ray(doc)
            for problem in report.errors:
                typer.echo(f"{path}: Ray/{name}: error: {problem}", err=True)
            for field in report.unknown_fields:
                typer.echo(
                    f"{path}: Ray/{name}: warning: unknown field {field} is ignored", err=True
                )
            if report.ok:
                typer.echo(f"{path}: Ray/{name}: valid")
            failed = failed or not report.ok
    if failed:
        sys.exit(1)


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    app.command()(run)
    app.command()(crds)
    app.command()(validate)
