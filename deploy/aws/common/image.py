"""The project's image for a module: what it is built from, its tag, the repository it goes to.

Each module that builds the image owns an ECR repository, created by a stack of its own
(``<stack>-image``) so that the deployspec can push into it before the module's stack, whose Helm
release or state machine uses the image, is deployed. The tag is a hash of the files the
``Dockerfile`` copies: unchanged sources keep the tag and skip the build; changed sources get a
new tag, so the chart and the state machine move to the new image on the same deploy.

Only the standard library here: the deployspec and ``bundle.py`` use it without CDK. The
repository's stack is :class:`common.resources.ImageRepositoryStack`.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import tomllib
from pathlib import Path

DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
_SKIPPED = ("__pycache__",)


def _instructions(text: str) -> list[list[str]]:
    """The Dockerfile's instructions as word lists (continuation lines joined, comments out)."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    return [shlex.split(line) for line in logical]


def copied_sources(dockerfile: Path) -> list[str]:
    """The build-context paths the ``Dockerfile``'s COPY and ADD instructions read."""
    sources: list[str] = []
    for words in _instructions(dockerfile.read_text()):
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        arguments = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue  # from another stage or image, not from the context
        if arguments and arguments[0].startswith("["):  # the JSON form
            arguments = re.findall(r'"([^"]*)"', " ".join(arguments))
        sources += [s for s in arguments[:-1] if "://" not in s]
    return sources


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part in _SKIPPED for part in p.parts) and p.suffix != ".pyc"
    )


def image_inputs(root: Path) -> list[Path]:
    """Every file the image is built from: the Dockerfile, .dockerignore, what it copies."""
    dockerfile = root / DOCKERFILE
    files = [dockerfile]
    if (root / DOCKERIGNORE).is_file():
        files.append(root / DOCKERIGNORE)
    for source in copied_sources(dockerfile):
        files += _files_under(root / source)
    return files


def image_tag(root: Path) -> str:
    """``<version>-<hash of the inputs>``: the same sources always give the same tag."""
    digest = hashlib.sha256()
    for path in sorted(set(image_inputs(root))):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    return f"{version}-{digest.hexdigest()[:12]}"


def split_image(image: str) -> tuple[str, str]:
    """``registry/name:tag`` as (repository, tag); no tag means ``latest``."""
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:  # no tag: "registry:5000/name" has a ':' in the host
        return image, "latest"
    return repository, tag
