"""Archive a finished job in S3: its whole log and the files ``s3upload.files`` lists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ray_operator.api.jobdata import S3Location
from ray_operator.jobs.config import JobConfig
from ray_operator.jobs.object_store import ObjectStore, ObjectStoreError


@dataclass
class ArchiveResult:
    """Where things went, and what could not be uploaded."""

    logs_url: str = ""
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def file_location(config: JobConfig, path: str) -> S3Location:
    """``s3://<bucket>/<job name>/files/<file name>``."""
    return S3Location(config.upload_bucket, f"{config.s3_prefix}files/{Path(path).name}")


async def archive(
    config: JobConfig, store: ObjectStore, upload_log: Callable[[S3Location], Awaitable[None]]
) -> ArchiveResult:
    """Upload the log, then each listed file, part by part; failures are collected.

    ``upload_log`` streams the log to the location it is given.
    """
    result = ArchiveResult()
    logs_at = config.logs_location
    if logs_at is None:
        if config.upload_files:
            result.errors.append("s3upload.files is set but s3upload.bucket is empty")
        return result
    try:
        await upload_log(logs_at)
        result.logs_url = str(logs_at)
    except ObjectStoreError as exc:
        result.errors.append(f"log upload failed: {exc}")
    for path in config.upload_files:
        target = file_location(config, path)
        try:
            with open(path, "rb"):  # a clear message for a file that is not there or not ours
                pass
        except OSError as exc:
            result.errors.append(f"s3upload.files: cannot read {path!r}: {exc.strerror}")
            continue
        try:
            await store.put_file(target, Path(path), "application/octet-stream")
            result.files.append(str(target))
        except ObjectStoreError as exc:
            result.errors.append(f"s3upload.files: {exc}")
    return result
