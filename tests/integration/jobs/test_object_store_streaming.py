"""Uploads to the local S3 server in parts: a stream of small chunks becomes one object, whole
and in order; a broken stream is raised as its own error (so the runner can start again) and
leaves no object behind."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ray_operator.api.jobdata import S3Location
from ray_operator.jobs.config import S3Settings
from ray_operator.jobs.object_store import PART_BYTES, ObjectStore
from tests.fixtures.s3 import ACCESS_KEY, BUCKET, REGION, SECRET_KEY


@pytest.fixture
def store(s3: Any, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return ObjectStore(S3Settings(endpoint=s3_server))


def lines(count: int) -> list[bytes]:
    return [f"line {i:08d} {'x' * 1000}\n".encode() for i in range(count)]


async def from_list(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_a_stream_of_small_chunks_becomes_one_object_in_several_parts(
    store: ObjectStore, s3: Any
) -> None:
    chunks = lines(20_000)  # about 20 MiB: several parts
    total = sum(map(len, chunks))
    assert total > 2 * PART_BYTES
    sent = await store.put_stream(S3Location(BUCKET, "job/logs"), from_list(chunks), "text/plain")
    assert sent == total
    body = s3.get_object(Bucket=BUCKET, Key="job/logs")
    data = body["Body"].read()
    assert hashlib.sha256(data).digest() == hashlib.sha256(b"".join(chunks)).digest()
    assert body["ContentType"] == "text/plain"
    # A multipart upload's ETag says how many parts it had ("<md5>-<parts>").
    parts = -(-total // PART_BYTES)
    assert body["ETag"].strip('"').endswith(f"-{parts}")


async def test_a_broken_stream_raises_its_own_error_and_leaves_no_object(
    store: ObjectStore, s3: Any
) -> None:
    class GoneError(RuntimeError):
        pass

    async def breaks() -> AsyncIterator[bytes]:
        for chunk in lines(10_000):
            yield chunk
        raise GoneError("the job API went away")

    with pytest.raises(GoneError):
        await store.put_stream(S3Location(BUCKET, "job/logs"), breaks(), "text/plain")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


async def test_a_file_goes_up_in_parts(store: ObjectStore, s3: Any, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"\0\1" * (PART_BYTES + 12345))
    await store.put_file(S3Location(BUCKET, "job/files/big.bin"), path, "application/octet-stream")
    head = s3.head_object(Bucket=BUCKET, Key="job/files/big.bin")
    assert head["ContentLength"] == path.stat().st_size
    assert head["ETag"].strip('"').endswith("-3")
