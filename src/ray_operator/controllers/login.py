"""How kopf logs in: the kubeconfig the settings name, else the pod's service account."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kopf
import yaml

from ray_operator.settings import Settings


def connection_from_kubeconfig(path: str) -> kopf.ConnectionInfo:
    """Read the current context of a kubeconfig (token or client certificate users)."""
    config: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    context_name = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    context = contexts.get(context_name) or next(iter(contexts.values()))
    cluster = {c["name"]: c["cluster"] for c in config["clusters"]}[context["cluster"]]
    user = {u["name"]: u["user"] for u in config.get("users", [])}.get(context.get("user"), {})

    def data(key: str) -> bytes | None:
        value = user.get(key) or cluster.get(key)
        return base64.b64decode(value) if value else None

    return kopf.ConnectionInfo(
        server=cluster["server"],
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        ca_path=cluster.get("certificate-authority"),
        ca_data=data("certificate-authority-data"),
        scheme="Bearer" if user.get("token") else None,
        token=user.get("token"),
        certificate_path=user.get("client-certificate"),
        certificate_data=data("client-certificate-data"),
        private_key_path=user.get("client-key"),
        private_key_data=data("client-key-data"),
        default_namespace=context.get("namespace"),
    )


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in with the configured kubeconfig, or in-cluster."""
    settings = Settings.from_env()
    if settings.kubeconfig:
        return connection_from_kubeconfig(settings.kubeconfig)
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info
