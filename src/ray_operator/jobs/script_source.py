"""Stage a job: fetch its script, parameters and metadata from where the ConfigMap says."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from ray_operator.api.jobdata import (
    KEY_METADATA,
    KEY_PARAMETERS,
    KEY_SCRIPT,
    ConfigError,
    S3Location,
)
from ray_operator.jobs.config import (
    LOCATION_FILE,
    LOCATION_INLINE,
    LOCATION_S3,
    JobConfig,
)
from ray_operator.jobs.object_store import ObjectStore

INLINE_SCRIPT_NAME: Final = "script.py"
_SAFE_NAME: Final = re.compile(r"^[A-Za-z0-9._-]+$")
_METADATA_PIP: Final = ("pip",)
_METADATA_ENV: Final = ("env", "env_vars", "envVars")


class SourceError(RuntimeError):
    """A script, parameter or metadata source cannot be read or understood."""


@dataclass(frozen=True)
class StagedJob:
    """What gets submitted: the script's file name and text, parameters, runtime env."""

    script_name: str
    script: bytes
    parameters: dict[str, str] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)


def script_file_name(location: str, ref: str) -> str:
    """The name the script gets in the job's working directory."""
    if location == LOCATION_INLINE:
        return INLINE_SCRIPT_NAME
    name = PurePosixPath(ref.strip().replace(":", "/")).name
    return name if _SAFE_NAME.match(name) else INLINE_SCRIPT_NAME


def parameters_from_json(key: str, text: str) -> dict[str, str]:
    """``{name: value}``: strings are passed as written, other JSON values as their JSON text."""
    data = _json(key, text)
    if not isinstance(data, dict):
        raise ConfigError(key, text, 'use a JSON object of parameters, e.g. {"epochs": "3"}')
    return {
        str(name): value if isinstance(value, str) else json.dumps(value)
        for name, value in data.items()
    }


def runtime_env_from_metadata(key: str, text: str) -> dict[str, Any]:
    """Ray runtime env from ``{"pip": {name: version}, "env": {NAME: value}}``."""
    data = _json(key, text)
    accepted = f"a JSON object with {_METADATA_PIP + _METADATA_ENV} keys"
    if not isinstance(data, dict):
        raise ConfigError(key, text, f"use {accepted}")
    unknown = sorted(set(data) - set(_METADATA_PIP) - set(_METADATA_ENV))
    if unknown:
        raise ConfigError(key, text, f"unknown keys {unknown}; use {accepted}")
    env: dict[str, Any] = {}
    pip = data.get("pip")
    if pip:
        env["pip"] = pip_requirements(key, pip)
    env_vars: dict[str, str] = {}
    for name in _METADATA_ENV:
        value = data.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(key, text, f"{name!r} must be an object of NAME: value")
        env_vars.update({str(k): str(v) for k, v in value.items()})
    if env_vars:
        env["env_vars"] = env_vars
    return env


def pip_requirements(key: str, pip: Any) -> list[str]:
    """``{name: version}`` (or a list of requirement strings) as pip requirements."""
    if isinstance(pip, list) and all(isinstance(p, str) for p in pip):
        return list(pip)
    if not isinstance(pip, dict):
        raise ConfigError(key, json.dumps(pip), 'pip must be {"name": "version"} or a list')
    out = []
    for name, version in pip.items():
        version = str(version or "").strip()
        if version in ("", "*", "latest"):
            out.append(str(name))
        elif version[0] in "<>=!~":
            out.append(f"{name}{version}")
        else:
            out.append(f"{name}=={version}")
    return out


def _json(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            key, text, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


async def _read(config_key: str, location: str, ref: str, store: ObjectStore | None) -> bytes:
    if location == LOCATION_INLINE:
        return ref.encode()
    if location == LOCATION_FILE:
        path = Path(ref.strip())
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SourceError(
                f"{config_key}: cannot read file {str(path)!r}: {exc.strerror}"
            ) from None
    assert location == LOCATION_S3
    if store is None:
        raise SourceError(f"{config_key}: an S3 location needs S3 settings")
    return await store.get(S3Location.parse(config_key, ref), config_key)


async def stage(config: JobConfig, store: ObjectStore | None) -> StagedJob:
    """Fetch and check everything before anything is submitted."""
    script = await _read(KEY_SCRIPT, config.script_location, config.script, store)
    parameters: dict[str, str] = {}
    runtime_env: dict[str, Any] = {}
    if config.parameters.strip():
        raw = await _read(KEY_PARAMETERS, config.extra_location, config.parameters, store)
        parameters = parameters_from_json(KEY_PARAMETERS, raw.decode())
    if config.metadata.strip():
        raw = await _read(KEY_METADATA, config.extra_location, config.metadata, store)
        runtime_env = runtime_env_from_metadata(KEY_METADATA, raw.decode())
    return StagedJob(
        script_name=script_file_name(config.script_location, config.script),
        script=script,
        parameters=parameters,
        runtime_env=runtime_env,
    )
