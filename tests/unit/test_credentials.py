"""Credentials read the way kubectl reads them (no server needed to load them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ray_operator.kube import Credentials, CredentialsError


def kubeconfig(path: Path, contexts: dict[str, dict[str, object]], current: str | None) -> Path:
    doc: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": n, "cluster": {"server": f"https://{n}.example:6443"}} for n in contexts
        ],
        "users": [{"name": n, "user": u} for n, u in contexts.items()],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in contexts],
    }
    if current:
        doc["current-context"] = current
    path.write_text(json.dumps(doc))
    return path


async def test_token_file_is_read_and_read_again(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    config = kubeconfig(tmp_path / "config", {"a": {"tokenFile": str(token)}}, "a")
    creds = await Credentials(str(config)).load()
    assert await creds.authorization() == "Bearer first"
    token.write_text("rotated")
    await creds.renew("Bearer first")  # what a 401 does
    assert await creds.authorization() == "Bearer rotated"
    assert creds.endpoint.server == "https://a.example:6443"


async def test_several_paths_and_a_named_context(tmp_path: Path) -> None:
    one = kubeconfig(tmp_path / "one", {"a": {"token": "ta"}}, "a")
    two = kubeconfig(tmp_path / "two", {"b": {"token": "tb"}}, None)
    paths = f"{one}:{two}"
    current = await Credentials(paths).load()
    assert current.endpoint.server == "https://a.example:6443"
    named = await Credentials(paths, context="b").load()
    assert await named.authorization() == "Bearer tb"
    assert named.endpoint.server == "https://b.example:6443"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such file"),
        ("no-current", "sets no current-context"),
        ("bad-context", "context 'nope' is not in"),
    ],
)
async def test_what_is_wrong_is_named(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "config"
    context = None
    if setup == "no-current":
        kubeconfig(path, {"a": {"token": "t"}}, None)
    elif setup == "bad-context":
        kubeconfig(path, {"a": {"token": "t"}}, "a")
        context = "nope"
    with pytest.raises(CredentialsError, match=message) as caught:
        await Credentials(str(path), context).load()
    assert str(path) in str(caught.value)
