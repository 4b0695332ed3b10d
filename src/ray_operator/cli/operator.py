"""``ray-operator run``, ``crds`` and ``validate``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from ray_operator.api.crd import all_crds
from ray_operator.api.pipeline import PipelineSpecError, parse_pipeline
from ray_operator.api.validation import validate_ray
from ray_operator.builders.rayjob import judge_job_cluster
from ray_operator.builders.rayjob_status import check_spec
from ray_operator.cli.manifests import Document, ManifestError, identify, read_documents


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
    files: Annotated[
        list[Path], typer.Argument(help="Manifests (YAML, several documents each; - for stdin).")
    ],
) -> None:
    """Check Ray, RayJob and RayPipeline manifests offline, with the operator's own rules.

    Exit 1 when anything is invalid or is not one of those kinds.
    """
    failed = False
    for path in files:
        try:
            documents = read_documents(path)
        except ManifestError as exc:
            typer.echo(f"{path}: error: {exc}", err=True)
            failed = True
            continue
        for index, raw in enumerate(documents):
            try:
                doc = identify(raw, index)
            except ManifestError as exc:
                typer.echo(f"{path}: error: {exc}", err=True)
                failed = True
                continue
            errors, warnings = _check(doc)
            label = f"{path}: {doc.kind}/{doc.name}"
            for problem in errors:
                typer.echo(f"{label}: error: {problem}", err=True)
            for warning in warnings:
                typer.echo(f"{label}: warning: {warning}", err=True)
            if not errors:
                typer.echo(f"{label}: valid")
            failed = failed or bool(errors)
    if failed:
        sys.exit(1)


def _check(doc: Document) -> tuple[list[str], list[str]]:
    """(errors, warnings) of one document, by the rules the operator applies to its kind."""
    if doc.kind == "Ray":
        report = validate_ray(doc.body)
        unknown = [f"unknown field {f} is ignored" for f in report.unknown_fields]
        return [str(p) for p in report.errors], unknown
    if doc.kind == "RayJob":
        checked = check_spec(doc.body.get("spec"))
        if checked.spec is None:
            return [checked.error or "invalid spec"], []
        if checked.spec.clusterSpec is None:
            return [], []
        # The job's own Ray, judged as the Ray it becomes, its fields named where they are.
        errors, unknown = judge_job_cluster(doc.name, checked.spec)
        return errors, [] if errors else [f"unknown field {f} is ignored" for f in unknown]
    try:
        parse_pipeline(doc.body, doc.name)
    except PipelineSpecError as exc:
        return exc.problems, []
    return [], []


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    app.command()(run)
    app.command()(crds)
    app.command()(validate)
