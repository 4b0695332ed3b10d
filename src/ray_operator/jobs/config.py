"""The job's ConfigMap, read into a typed :class:`JobConfig`.

The keys are the original ray-pod's, unchanged, so a ConfigMap written for it works here:
``jobdata.jobScript``, ``jobdata.scriptLocation``, ``jobdata.jobParameters``,
``jobdata.scriptMetadata``, ``jobdata.scriptExtraLocation``, ``resourceURL``, ``resourcesecret``,
``updateInterval``, ``s3.endpoint``, ``s3.secure``, ``s3.secret``, ``s3upload.bucket``,
``s3upload.files``, ``kill``, ``id`` and ``status.*``. New keys: ``activeDeadlineSeconds`` and
``unreachableTimeoutSeconds``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ray_operator.api.jobdata import (
    KEY_ADDRESS,
    KEY_DEADLINE,
    KEY_EXTRA_LOCATION,
    KEY_ID,
    KEY_INTERVAL,
    KEY_KILL,
    KEY_METADATA,
    KEY_PARAMETERS,
    KEY_RAY_SECRET,
    KEY_S3_ENDPOINT,
    KEY_S3_SECRET,
    KEY_S3_SECURE,
    KEY_SCRIPT,
    KEY_SCRIPT_LOCATION,
    KEY_UNREACHABLE_TIMEOUT,
    KEY_UPLOAD_BUCKET,
    KEY_UPLOAD_FILES,
    ConfigError,
    S3Location,
)

LOCATION_INLINE: Final = "inline"
LOCATION_S3: Final = "s3"
LOCATION_FILE: Final = "file"
# "local" is accepted as another name of "file".
_LOCATIONS: Final = {
    "inline": LOCATION_INLINE,
    "s3": LOCATION_S3,
    "file": LOCATION_FILE,
    "local": LOCATION_FILE,
}

DEFAULT_INTERVAL: Final = 1.0
DEFAULT_UNREACHABLE_TIMEOUT: Final = 60.0

# Where the runner Pod mounts its Secrets (the env can point elsewhere, e.g. in tests).
ENV_CONFIGMAP: Final = "RAY_JOB_CONFIGMAP"
ENV_NAMESPACE: Final = "RAY_JOB_NAMESPACE"
ENV_JOB_NAME: Final = "RAY_JOB_NAME"
ENV_S3_CREDENTIALS_DIR: Final = "RAY_JOB_S3_CREDENTIALS_DIR"
ENV_RAY_TOKEN_FILE: Final = "RAY_JOB_RAY_TOKEN_FILE"
DEFAULT_S3_CREDENTIALS_DIR: Final = "/etc/ray-job/s3"
DEFAULT_RAY_TOKEN_FILE: Final = "/etc/ray-job/ray/token"
_SA_NAMESPACE_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3: endpoint (empty for AWS), https or not, the credentials Secret's name."""

    endpoint: str | None = None
    secure: bool = True
    secret: str = ""

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint as a URL (the original wrote it without a scheme)."""
        if not self.endpoint:
            return None
        if "://" in self.endpoint:
            return self.endpoint
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


@dataclass(frozen=True)
class JobConfig:
    """Everything the runner needs to know about one job."""

    name: str
    namespace: str
    address: str
    script: str
    script_location: str = LOCATION_INLINE
    parameters: str = ""
    metadata: str = ""
    extra_location: str = LOCATION_INLINE
    interval: float = DEFAULT_INTERVAL
    s3: S3Settings = field(default_factory=S3Settings)
    upload_bucket: str = ""
    upload_files: tuple[str, ...] = ()
    kill: bool = False
    submission_id: str = ""
    ray_secret: str = ""
    active_deadline_seconds: float | None = None
    unreachable_timeout: float = DEFAULT_UNREACHABLE_TIMEOUT

    @property
    def s3_prefix(self) -> str:
        """Where this job's objects go in the upload bucket."""
        return f"{self.name}/"

    @property
    def logs_location(self) -> S3Location | None:
        """Where the job log is uploaded, when an upload bucket is set."""
        if not self.upload_bucket:
            return None
        return S3Location(self.upload_bucket, f"{self.s3_prefix}logs")


_TRUE: Final = {"true", "yes", "1", "on"}
_FALSE: Final = {"false", "no", "0", "off", ""}


def parse_bool(key: str, value: str) -> bool:
    """Read a boolean as the original wrote them ('true' / 'false')."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(key, value, "use 'true' or 'false'")


def _positive_seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(key, value, "use a number of seconds greater than 0") from None
    if not seconds > 0:
        raise ConfigError(key, value, "use a number of seconds greater than 0")
    return seconds


def _location(key: str, value: str) -> str:
    lowered = value.strip().lower() or LOCATION_INLINE
    if lowered not in _LOCATIONS:
        raise ConfigError(key, value, "use one of 'inline', 's3' or 'file'")
    return _LOCATIONS[lowered]


def _upload_files(value: str) -> tuple[str, ...]:
    """Absolute paths the runner can read (e.g. a volume shared with the Ray pods)."""
    paths = tuple(p.strip() for p in re.split(r"[,\n]", value) if p.strip())
    for path in paths:
        if not Path(path).is_absolute():
            raise ConfigError(
                KEY_UPLOAD_FILES,
                value,
                "list absolute paths of files the runner can read (e.g. on a volume shared with "
                f"the Ray cluster), separated by commas; {path!r} is relative",
            )
    return paths


def parse_config(name: str, namespace: str, data: Mapping[str, str]) -> JobConfig:
    """Read a ConfigMap's ``data``; raises :class:`ConfigError` naming the key at fault."""
    address = data.get(KEY_ADDRESS, "").strip()
    if not address:
        raise ConfigError(KEY_ADDRESS, address, "give the Ray job API URL, e.g. http://head:8265")
    if not re.match(r"^https?://[^/\s]+", address):
        raise ConfigError(
            KEY_ADDRESS, address, "use an http:// or https:// URL, e.g. http://head:8265"
        )
    script = data.get(KEY_SCRIPT, "")
    if not script.strip():
        raise ConfigError(KEY_SCRIPT, script, "give the script text, an S3 object or a file path")
    script_location = _location(KEY_SCRIPT_LOCATION, data.get(KEY_SCRIPT_LOCATION, ""))
    extra_location = _location(KEY_EXTRA_LOCATION, data.get(KEY_EXTRA_LOCATION, ""))
    if script_location == LOCATION_S3:
        S3Location.parse(KEY_SCRIPT, script)
    for key in (KEY_PARAMETERS, KEY_METADATA):
        if extra_location == LOCATION_S3 and data.get(key, "").strip():
            S3Location.parse(key, data[key])
    interval = data.get(KEY_INTERVAL, "").strip()
    deadline = data.get(KEY_DEADLINE, "").strip()
    unreachable = data.get(KEY_UNREACHABLE_TIMEOUT, "").strip()
    return JobConfig(
        name=name,
        namespace=namespace,
        address=address.rstrip("/"),
        script=script,
        script_location=script_location,
        parameters=data.get(KEY_PARAMETERS, ""),
        metadata=data.get(KEY_METADATA, ""),
        extra_location=extra_location,
        interval=_positive_seconds(KEY_INTERVAL, interval) if interval else DEFAULT_INTERVAL,
        s3=S3Settings(
            endpoint=data.get(KEY_S3_ENDPOINT, "").strip() or None,
            secure=parse_bool(KEY_S3_SECURE, data.get(KEY_S3_SECURE, "true")),
            secret=data.get(KEY_S3_SECRET, "").strip(),
        ),
        upload_bucket=data.get(KEY_UPLOAD_BUCKET, "").strip(),
        upload_files=_upload_files(data.get(KEY_UPLOAD_FILES, "")),
        kill=parse_bool(KEY_KILL, data.get(KEY_KILL, "false")),
        submission_id=data.get(KEY_ID, "").strip(),
        ray_secret=data.get(KEY_RAY_SECRET, "").strip(),
        active_deadline_seconds=_positive_seconds(KEY_DEADLINE, deadline) if deadline else None,
        unreachable_timeout=(
            _positive_seconds(KEY_UNREACHABLE_TIMEOUT, unreachable)
            if unreachable
            else DEFAULT_UNREACHABLE_TIMEOUT
        ),
    )


@dataclass(frozen=True)
class RunnerEnvironment:
    """What the runner Pod's environment tells it: its ConfigMap and where its Secrets are."""

    configmap: str
    namespace: str
    s3_credentials_dir: Path = Path(DEFAULT_S3_CREDENTIALS_DIR)
    ray_token_file: Path = Path(DEFAULT_RAY_TOKEN_FILE)
    kubeconfig: str | None = None
    job_name: str = ""

    @property
    def name(self) -> str:
        """The job's name (the S3 prefix): ``RAY_JOB_NAME``, else the ConfigMap's name."""
        return self.job_name or self.configmap

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunnerEnvironment:
        """Read it once at start-up (default: the process environment)."""
        env = os.environ if env is None else env
        configmap = env.get(ENV_CONFIGMAP, "")
        if not configmap:
            raise ConfigError(ENV_CONFIGMAP, "", "set it to the name of the job's ConfigMap")
        namespace = env.get(ENV_NAMESPACE, "")
        if not namespace and Path(_SA_NAMESPACE_FILE).exists():
            namespace = Path(_SA_NAMESPACE_FILE).read_text().strip()
        if not namespace:
            raise ConfigError(ENV_NAMESPACE, "", "set it to the namespace of the job's ConfigMap")
        return cls(
            configmap=configmap,
            namespace=namespace,
            s3_credentials_dir=Path(env.get(ENV_S3_CREDENTIALS_DIR, DEFAULT_S3_CREDENTIALS_DIR)),
            ray_token_file=Path(env.get(ENV_RAY_TOKEN_FILE, DEFAULT_RAY_TOKEN_FILE)),
            kubeconfig=env.get("KUBECONFIG") or None,
            job_name=env.get(ENV_JOB_NAME, ""),
        )
