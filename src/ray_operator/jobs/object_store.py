"""S3 access for the runner: read scripts and parameters, upload logs and files.

Uploads go through boto3's managed transfer (s3transfer): multipart above one part's size, a
few parts in flight, so memory stays bounded whatever the size of a log or a file. A log comes
as a stream of chunks from the job API and is uploaded as it arrives, never held whole.

Credentials come only from the mounted Secret (one file per key) or, when none is mounted, from
the standard AWS chain (env, IRSA web identity, instance profile). They are never printed: errors
name the bucket, the key and the endpoint, not the credentials.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, cast

from ray_operator.api.jobdata import S3Location
from ray_operator.jobs.config import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# File names accepted in the mounted Secret: the AWS variable names, or the MinIO-style ones.
_ACCESS_KEY_FILES: Final = ("AWS_ACCESS_KEY_ID", "accessKey", "access_key", "accesskey")
_SECRET_KEY_FILES: Final = ("AWS_SECRET_ACCESS_KEY", "secretKey", "secret_key", "secretkey")
_SESSION_TOKEN_FILES: Final = ("AWS_SESSION_TOKEN", "sessionToken")
_REGION_FILES: Final = ("AWS_REGION", "AWS_DEFAULT_REGION", "region")


# Parts of S3's smallest size, four in memory at a time: about 35 MB above the runner's own,
# whatever the size (measured: 8 MiB parts cost 60 MB for the same speed). A file's parts grow
# to fit S3's 10,000 (its size is known); a log's cannot, which caps a log at 48 GiB.
PART_BYTES: Final = 5 * 1024 * 1024
PARTS_IN_FLIGHT: Final = 4


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
        """Write one small object."""

        def write() -> None:
            self._s3().put_object(
                Bucket=location.bucket, Key=location.key, Body=data, ContentType=content_type
            )

        await self._upload(location, write)

    async def put_file(self, location: S3Location, path: Path, content_type: str) -> None:
        """Upload a file, part by part."""

        def write() -> None:
            self._s3().upload_file(
                str(path), location.bucket, location.key,
                ExtraArgs={"ContentType": content_type}, Config=_transfer_config(),
            )

        await self._upload(location, write)

    async def put_stream(
        self, location: S3Location, chunks: AsyncIterator[bytes], content_type: str
    ) -> int:
        """Upload what ``chunks`` yields as one object, as it comes; the bytes uploaded.

        An error of the stream itself (the job API went away) is raised as it is, so that the
        caller can tell it from a refusal of S3 and try again.
        """
        reader = _ChunkReader(chunks, asyncio.get_running_loop())

        def write() -> None:
            self._s3().upload_fileobj(
                cast("IO[bytes]", reader), location.bucket, location.key,
                ExtraArgs={"ContentType": content_type}, Config=_transfer_config(),
            )

        try:
            await self._upload(location, write)
        except ObjectStoreError:
            if reader.source_error is not None:
                raise reader.source_error from None
            raise
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:  # a generator's connection closes now, not when collected
                await aclose()
        return reader.total

    async def _upload(self, location: S3Location, write: Any) -> None:
        try:
            await asyncio.to_thread(write)
        except Exception as exc:
            code = _error_code(exc)
            raise ObjectStoreError(
                f"cannot upload to bucket {location.bucket!r}, key {location.key!r} at "
                f"{self.where}: {code or type(exc).__name__}"
            ) from None


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=PART_BYTES,
        multipart_chunksize=PART_BYTES,
        max_concurrency=PARTS_IN_FLIGHT,
    )
    # s3transfer reads up to 10 parts ahead of those being sent (its default); boto3's
    # constructor does not take the setting, its s3transfer base class has it as an attribute.
    config.max_in_memory_upload_chunks = PARTS_IN_FLIGHT
    return config


class _ChunkReader(io.RawIOBase):
    """A file boto3 reads in its thread, filled from an async iterator on the event loop."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = chunks
        self._loop = loop
        self._pending = bytearray()
        self._done = False
        self.total = 0
        self.source_error: Exception | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            try:
                chunk = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            except Exception as exc:
                self.source_error = exc
                raise
            if chunk is None:
                self._done = True
                break
            self._pending += chunk
        end = len(self._pending) if size < 0 else min(size, len(self._pending))
        with memoryview(self._pending) as view:
            out = bytes(view[:end])  # one copy, not a slice and then bytes of it
        del self._pending[:end]
        self.total += len(out)
        return out

    async def _next(self) -> bytes | None:
        # None, not StopAsyncIteration: that exception does not cross a future well.
        return await anext(self._chunks, None)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
