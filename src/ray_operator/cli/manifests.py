"""Reading manifests for the offline commands: files or stdin, each document said what it is."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ray_operator.api.constants import API_VERSION

KINDS = ("Ray", "RayJob", "RayPipeline")
# Resources users bring from KubeRay, and what to write instead.
KUBERAY = {
    "RayCluster": "Ray",
    "RayJob": "RayJob",
    "RayService": "Ray (a RayService has no equivalent here yet)",
}


class ManifestError(ValueError):
    """A file or document the offline commands cannot use; the message says why and what fits."""


@dataclass(frozen=True)
class Document:
    """One object of ours: its kind, its name and the whole mapping."""

    kind: str
    name: str
    body: dict[str, Any]


def read_documents(path: Path) -> list[Any]:
    """The non-empty YAML documents of ``path`` (``-``: standard input)."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"cannot read: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror or exc}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"not YAML: {' '.join(str(exc).split())}") from None
    if not documents:
        raise ManifestError("no objects in it (an empty file or only comments)")
    return documents


def identify(doc: Any, index: int) -> Document:
    """``doc`` as one of our kinds, or a :class:`ManifestError` that says what it is instead."""
    where = f"document {index + 1}"
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: a {type(doc).__name__}, not a Kubernetes object (a mapping)")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    meta = doc.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ManifestError(f"{where}: metadata={meta!r} is not accepted: a mapping with a name")
    name = meta.get("name")
    label = f"{kind}/{name}" if isinstance(name, str) and name else f"{where} ({kind})"
    if api_version == "ray.io/v1" and kind in KUBERAY:
        raise ManifestError(
            f"{label}: apiVersion ray.io/v1 is KubeRay's: this operator serves "
            f"{API_VERSION} {KUBERAY[kind]} (see README.md)"
        )
    if kind not in KINDS:
        raise ManifestError(
            f"{label}: kind={kind!r} is not accepted: one of {', '.join(KINDS)} "
            f"(apiVersion {API_VERSION})"
        )
    if api_version != API_VERSION:
        raise ManifestError(
            f"{label}: apiVersion={api_version!r} is not accepted: {API_VERSION}"
        )
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where} ({kind}): metadata.name is missing")
    return Document(str(kind), name, doc)
