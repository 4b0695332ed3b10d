"""The runner's S3 client takes its region from the AWS chain, never from a fixed default."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_operator.jobs.config import S3Settings
from ray_operator.jobs.object_store import ObjectStore


@pytest.fixture(autouse=True)
def fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 keeps one default session per process (a runner process makes one)."""
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def client_region(credentials_dir: Path | None = None) -> str | None:
    store = ObjectStore(S3Settings(), credentials_dir)
    region: str | None = store._s3().meta.region_name
    return region


def test_the_region_comes_from_the_environment_as_irsa_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert client_region() == "eu-west-1"


def test_the_region_of_a_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    config = tmp_path / "config"
    config.write_text("[default]\nregion = ap-southeast-2\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    assert client_region() == "ap-southeast-2"


def test_a_mounted_secret_s_region_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("key")
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("secret")
    (tmp_path / "AWS_REGION").write_text("us-west-2")
    assert client_region(tmp_path) == "us-west-2"
