"""Operator settings, read once at start-up from ``RAY_OPERATOR_*`` environment variables."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ray_operator.api.constants import DEFAULT_RAY_IMAGE, DNS_SUBDOMAIN, ROLE_HEAD, ROLE_WORKER

DEFAULT_RUNNER_IMAGE = "ray-operator:latest"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Where a pod finds its own namespace (the service account volume every pod gets).
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class SettingsError(ValueError):
    """A setting has a value the operator cannot use; the message names it and what is accepted."""


@dataclass(frozen=True)
class Settings:
    """Everything the operator can be told at start-up; nothing else reads the environment."""

    ray_image: str = DEFAULT_RAY_IMAGE
    resync_seconds: float = 60.0
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    kubeconfig: str | None = None
    context: str | None = None
    runner_image: str = DEFAULT_RUNNER_IMAGE
    # Secrets runner Pods pull their image with (a RayJob's runnerTemplate may give others).
    runner_pull_secrets: tuple[str, ...] = field(default_factory=tuple)
    # Default head/worker templates of new clusters instead of the built-in ones (from a file).
    default_templates: dict[str, Any] | None = None
    metrics_port: int = 8080
    # Leader election: on when a namespace for the Lease is known.
    leader_election: bool = True
    leader_election_namespace: str | None = None
    leader_election_id: str = "ray-operator"
    # Who this process is to the Lease: its pod's name (a container restarted in the same pod
    # takes its Lease back at once; another pod waits for it to expire).
    leader_election_identity: str | None = None
    # Where the operator's pods run (admitted to Ray's job API by a Ray's NetworkPolicy).
    operator_namespace: str | None = None

    @property
    def cluster_wide(self) -> bool:
        """True when no namespace list was given: the operator watches every namespace."""
        return not self.namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: the process environment).

        Raises :class:`SettingsError` naming the variable, its value and what is accepted.
        """
        env = os.environ if env is None else env
        namespaces = tuple(
            ns.strip() for ns in env.get("RAY_OPERATOR_NAMESPACES", "").split(",") if ns.strip()
        )
        for ns in namespaces:
            if not _DNS_LABEL.match(ns) or len(ns) > 63:
                raise SettingsError(
                    f"RAY_OPERATOR_NAMESPACES: {ns!r} is not a namespace name (lower-case "
                    "letters, digits and '-', at most 63 characters); give names separated by ','"
                )
        ray_image = env.get("RAY_OPERATOR_RAY_IMAGE") or DEFAULT_RAY_IMAGE
        templates_file = env.get("RAY_OPERATOR_DEFAULT_TEMPLATES")
        lease_namespace = env.get("RAY_OPERATOR_LEADER_ELECTION_NAMESPACE") or _pod_namespace()
        return cls(
            ray_image=ray_image,
            resync_seconds=_number(env, "RAY_OPERATOR_RESYNC_SECONDS", 60.0, minimum=1.0),
            namespaces=namespaces,
            kubeconfig=env.get("KUBECONFIG") or None,
            context=env.get("RAY_OPERATOR_CONTEXT") or None,
            runner_image=env.get("RAY_OPERATOR_RUNNER_IMAGE") or DEFAULT_RUNNER_IMAGE,
            runner_pull_secrets=_names(env, "RAY_OPERATOR_RUNNER_IMAGE_PULL_SECRETS"),
            default_templates=(
                load_default_templates(Path(templates_file), ray_image) if templates_file else None
            ),
            metrics_port=int(
                _number(env, "RAY_OPERATOR_METRICS_PORT", 8080, minimum=0, maximum=65535)
            ),
            leader_election=_flag(env, "RAY_OPERATOR_LEADER_ELECTION", True),
            leader_election_namespace=lease_namespace,
            leader_election_id=env.get("RAY_OPERATOR_LEADER_ELECTION_ID") or "ray-operator",
            leader_election_identity=env.get("RAY_OPERATOR_LEADER_ELECTION_IDENTITY") or None,
            operator_namespace=_pod_namespace() or lease_namespace,
        )


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of object names (Secrets): DNS subdomains."""
    found = tuple(n.strip() for n in env.get(name, "").split(",") if n.strip())
    for item in found:
        if not DNS_SUBDOMAIN.match(item) or len(item) > 253:
            raise SettingsError(
                f"{name}: {item!r} is not a Secret name (lower-case letters, digits, '-' and "
                "'.'); give names separated by ','"
            )
    return found


def _number(
    env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float | None = None
) -> float:
    text = env.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    bounds = f"at least {minimum:g}" + (f" and at most {maximum:g}" if maximum is not None else "")
    if math.isnan(value) or value < minimum or (maximum is not None and value > maximum):
        raise SettingsError(f"{name}={text!r} is not valid; a number {bounds} is accepted")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={text!r} is not valid; true or false is accepted")


def _pod_namespace() -> str | None:
    try:
        return POD_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def load_default_templates(path: Path, ray_image: str) -> dict[str, Any]:
    """Head and worker PodTemplateSpecs from a YAML file (``head:`` and ``worker:``).

    A container without an image gets ``ray_image``. Raises :class:`SettingsError` naming the
    file and the part that is wrong.
    """
    where = f"RAY_OPERATOR_DEFAULT_TEMPLATES={str(path)!r}"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(f"{where}: cannot read it: {exc}") from None
    if not isinstance(data, dict) or set(data) - {ROLE_HEAD, ROLE_WORKER} or not data:
        raise SettingsError(
            f"{where}: a mapping with the keys 'head' and 'worker' (each a pod template) is "
            "accepted"
        )
    templates: dict[str, Any] = {}
    for role in (ROLE_HEAD, ROLE_WORKER):
        template = data.get(role)
        containers = ((template or {}).get("spec") or {}).get("containers")
        if not isinstance(template, dict) or not isinstance(containers, list) or not containers:
            raise SettingsError(
                f"{where}: {role}.spec.containers is missing; a pod template with at least one "
                "container is accepted for both 'head' and 'worker'"
            )
        for container in containers:
            if isinstance(container, dict):
                container.setdefault("image", ray_image)
        templates[role] = template
    return templates
