"""The keys of a job's ConfigMap, shared by the runner and the RayJob controller.

The runner reads and writes the ConfigMap; the controller builds it and mirrors its status.
They are the original ray-pod's, unchanged, so a ConfigMap written for it works here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# ConfigMap keys, as the original pod named them.
KEY_SCRIPT: Final = "jobdata.jobScript"
KEY_SCRIPT_LOCATION: Final = "jobdata.scriptLocation"
KEY_PARAMETERS: Final = "jobdata.jobParameters"
KEY_METADATA: Final = "jobdata.scriptMetadata"
KEY_EXTRA_LOCATION: Final = "jobdata.scriptExtraLocation"
KEY_ADDRESS: Final = "resourceURL"
KEY_RAY_SECRET: Final = "resourcesecret"
KEY_INTERVAL: Final = "updateInterval"
KEY_S3_ENDPOINT: Final = "s3.endpoint"
KEY_S3_SECURE: Final = "s3.secure"
KEY_S3_SECRET: Final = "s3.secret"
KEY_UPLOAD_BUCKET: Final = "s3upload.bucket"
KEY_UPLOAD_FILES: Final = "s3upload.files"
KEY_KILL: Final = "kill"
KEY_ID: Final = "id"
KEY_DEADLINE: Final = "activeDeadlineSeconds"
KEY_UNREACHABLE_TIMEOUT: Final = "unreachableTimeoutSeconds"

STATUS_JOB: Final = "status.jobStatus"
STATUS_SUBMIT_TIME: Final = "status.submitTime"
STATUS_START_TIME: Final = "status.startTime"
STATUS_END_TIME: Final = "status.endTime"
STATUS_MESSAGE: Final = "status.message"
STATUS_REASON: Final = "status.reason"
STATUS_LOGS_URL: Final = "status.logsURL"


class ConfigError(ValueError):
    """A ConfigMap key holds a value the runner cannot use; the message says what is accepted."""

    def __init__(self, key: str, value: str, accepted: str) -> None:
        shown = value if len(value) <= 200 else value[:200] + "..."
        super().__init__(f"{key}={shown!r} is not valid: {accepted}")
        self.key = key
        self.value = value


@dataclass(frozen=True)
class S3Location:
    """One S3 object, written ``bucket:key`` (as the original) or ``s3://bucket/key``."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, config_key: str, text: str) -> S3Location:
        """Read ``bucket:key`` or ``s3://bucket/key``; ``config_key`` names the key in errors."""
        text = text.strip()
        if text.startswith("s3://"):
            bucket, _, key = text[len("s3://") :].partition("/")
        else:
            bucket, _, key = text.partition(":")
        if not bucket or not key or "/" in bucket:
            raise ConfigError(
                config_key, text, "write an S3 object as bucket:key or s3://bucket/key"
            )
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"
