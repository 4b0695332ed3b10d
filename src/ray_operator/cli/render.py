"""``ray-operator render``: the objects the operator would create, offline, as YAML.

For a ``Ray``: its head Service and head and worker Deployments, defaults resolved (those recorded
on the manifest, else the ones a new cluster gets today from the same settings the operator
reads). For a ``RayJob``: its ServiceAccount, Role, RoleBinding, ConfigMap and runner Pod. The
same checks as ``validate``; what the apiserver assigns (uids, the submission id chosen at the
first reconcile) is left out.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from ray_operator.api.constants import GROUP
from ray_operator.api.validation import validate_ray
from ray_operator.autoscaling import provider_code
from ray_operator.builders.defaults import Defaults, DefaultsError, current_defaults, read_defaults
from ray_operator.builders.ray_cluster import build_children, plan_cluster, roles_using_defaults
from ray_operator.builders.rayjob import (
    build_job_cluster,
    build_rayjob_children,
    job_cluster_error,
    on_own_cluster,
)
from ray_operator.builders.rayjob_status import check_spec
from ray_operator.cli.manifests import ManifestError, read_documents

Obj = dict[str, Any]


class RenderError(ValueError):
    """A manifest that the operator would refuse; the message names the field."""


def render_ray(doc: Obj, ray_image: str, templates: dict[str, Obj] | None) -> list[Obj]:
    """The children of one ``Ray``."""
    report = validate_ray(doc)
    if not report.ok or report.resource is None:
        raise RenderError(report.message())
    try:
        recorded = read_defaults(doc)
    except DefaultsError as exc:
        raise RenderError(str(exc)) from None
    today = current_defaults(ray_image, templates)
    needed = roles_using_defaults(report.resource)
    defaults = recorded or Defaults(today.revision, {r: today.templates[r] for r in needed})
    missing = {r: today.templates[r] for r in needed if defaults.template(r) is None}
    plan = plan_cluster(report.resource, defaults.with_templates(missing), report.unknown_fields)
    return build_children(plan, provider_code())


def render_rayjob(doc: Obj, runner_image: str, pull_secrets: tuple[str, ...] = ()) -> list[Obj]:
    """The children of one ``RayJob``."""
    checked = check_spec(doc.get("spec"))
    if checked.spec is None:
        raise RenderError(checked.error or "invalid spec")
    meta = doc.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    name, uid, spec = meta.get("name", ""), meta.get("uid", ""), checked.spec
    own: list[Obj] = []
    if spec.clusterSpec is not None:
        error = job_cluster_error(name)
        if error is not None:
            raise RenderError(error)
        # The job's own Ray first (its children: render that Ray), then the job's children.
        own = [build_job_cluster(name, uid, namespace, spec)]
        spec = on_own_cluster(name, spec)
    children = own + build_rayjob_children(
        name, uid, namespace, spec, runner_image, None, {}, pull_secrets
    )
    for child in children:
        child["metadata"]["namespace"] = namespace
    return children


def render(
    files: Annotated[
        list[Path], typer.Argument(help="Manifests (YAML, several documents each; - for stdin).")
    ],
) -> None:
    """Print what the operator would create for each Ray and RayJob, without a cluster."""
    from ray_operator.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        typer.echo(f"ray-operator render: {exc}", err=True)
        raise typer.Exit(2) from None
    out: list[Obj] = []
    failed = False
    for path in files:
        try:
            documents = read_documents(path)
        except ManifestError as exc:
            typer.echo(f"{path}: error: {exc}", err=True)
            failed = True
            continue
        for doc in documents:
            if not isinstance(doc, dict) or not str(doc.get("apiVersion", "")).startswith(GROUP):
                continue
            kind = doc.get("kind")
            meta = doc.get("metadata")
            doc["metadata"] = {"namespace": "default", **(meta if isinstance(meta, dict) else {})}
            name = doc["metadata"].get("name", "?")
            try:
                if kind == "Ray":
                    out.extend(render_ray(doc, settings.ray_image, settings.default_templates))
                elif kind == "RayJob":
                    out.extend(render_rayjob(
                        doc, settings.runner_image, settings.runner_pull_secrets
                    ))
            except RenderError as exc:
                typer.echo(f"{path}: {kind}/{name}: error: {exc}", err=True)
                failed = True
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False))
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the command to the main app."""
    app.command()(render)
