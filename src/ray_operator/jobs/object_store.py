"""S3 access for the runner: read scripts and parameters, upload logs and files.

Credentials come only from the mounted Secret (one file per key) or, when none is mounted, from
the standard AWS chain (env, IRSA web identity, instance profile). They are never printed: errors
name the bucket, the key and the endpoint, not the credentials.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ray_operator.api.jobdata import S3Location
from ray_operator.jobs.config import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# File names accepted in the mounted Secret: the AWS variable names, or the MinIO-style ones.
_ACCESS_KEY_FILES: Final = ("AWS_ACCESS_KEY_ID", "accessKey", "access_key", "accesskey")
_SECRET_KEY_FILES: Final = ("AWS_SECRET_ACCESS_KEY", "secretKey", "secret_key", "secretkey")
_SESSION_TOKEN_FILES: Final = ("AWS_SESSION_TOKEN", "sessionToken")
_REGION_FILES: Final = ("AWS_REGION", "AWS_DEFAULT_REGION", "region")


class ObjectStoreError(RuntimeError):
    """An S3 request failed; the message names the bucket, key and endpoint."""


class ObjectMissingError(ObjectStoreError):
    """The bucket or the object does not exist."""


def _first_file(directory: Path, names: tuple[str, ...]) -> str | None:
    for name in names:
        path = directory / name
        if path.is_file():
            return path.read_text().strip()
    return None


def read_credentials(directory: Path | None) -> dict[str, str]:
    """boto3 client arguments from a mounted Secret; empty means "use the AWS chain"."""
    if directory is None or not directory.is_dir():
        return {}
    access = _first_file(directory, _ACCESS_KEY_FILES)
    secret = _first_file(directory, _SECRET_KEY_FILES)
    if not access or not secret:
        return {}
    creds = {"aws_access_key_id": access, "aws_secret_access_key": secret}
    token = _first_file(directory, _SESSION_TOKEN_FILES)
    if token:
        creds["aws_session_token"] = token
    region = _first_file(directory, _REGION_FILES)
    if region:
        creds["region_name"] = region
    return creds


class ObjectStore:
    """One S3 endpoint; boto3 calls run in a thread so the event loop keeps following the job."""

    def __init__(self, settings: S3Settings, credentials_dir: Path | None = None) -> None:
        self.settings = settings
        self._credentials_dir = credentials_dir
        self._client: S3Client | None = None

    @property
    def where(self) -> str:
        """The endpoint, for messages."""
        return self.settings.endpoint_url or "AWS S3"

    def _s3(self) -> S3Client:
        if self._client is None:
            import boto3  # imported on first use: a job without S3 never pays for it

            # No region of our own: boto3's chain (AWS_REGION, which the EKS IRSA and Pod
            # Identity webhooks set, AWS_DEFAULT_REGION, the profile) decides, else the global
            # endpoint, whose redirects lead to the bucket's own region.
            kwargs: dict[str, Any] = read_credentials(self._credentials_dir)
            if self.settings.endpoint_url:
                kwargs["endpoint_url"] = self.settings.endpoint_url
            self._client = boto3.client("s3", **kwargs)
        return self._client

    async def get(self, location: S3Location, what: str) -> bytes:
        """Read one object; ``what`` says which setting pointed at it (for the message)."""

        def read() -> bytes:
            body = self._s3().get_object(Bucket=location.bucket, Key=location.key)["Body"]
            return body.read()

        try:
            return await asyncio.to_thread(read)
        except Exception as exc:  # botocore raises many types; each becomes a named message
            code = _error_code(exc)
            if code in ("NoSuchKey", "NoSuchBucket", "404"):
                raise ObjectMissingError(
                    f"{what}: S3 object not found: bucket {location.bucket!r}, key "
                    f"{location.key!r} ({code} at {self.where})"
                ) from None
            raise ObjectStoreError(
                f"{what}: cannot read bucket {location.bucket!r}, key {location.key!r} at "
                f"{self.where}: {code or type(exc).__name__}"
            ) from None

    async def put(self, location: S3Location, data: bytes, content_type: str) -> None:
        """Write one object."""

        def write() -> None:
            self._s3().put_object(
                Bucket=location.bucket, Key=location.key, Body=data, ContentType=content_type
            )

        try:
            await asyncio.to_thread(write)
        except Exception as exc:
            code = _error_code(exc)
            raise ObjectStoreError(
                f"cannot upload to bucket {location.bucket!r}, key {location.key!r} at "
                f"{self.where}: {code or type(exc).__name__}"
            ) from None


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
