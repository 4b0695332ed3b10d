"""The project's Kubernetes client against the real apiserver: refusals stay with their request."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ray_operator.kube import CONFIGMAP, NAMESPACE, Kube, KubeError, KubeTransportError

FINALIZER = "test.ray.kubeflow.org/keep"


@pytest.fixture
async def terminating_namespace(kube: Kube) -> AsyncIterator[str]:
    """A namespace held in Terminating by a finalizer on one of its ConfigMaps."""
    name = f"t-end-{secrets.token_hex(4)}"
    await kube.create(NAMESPACE, {"metadata": {"name": name}})
    await kube.create(
        CONFIGMAP, {"metadata": {"name": "held", "namespace": name, "finalizers": [FINALIZER]}}
    )
    await kube.delete(NAMESPACE, name)
    for _ in range(100):
        phase = (await kube.get(NAMESPACE, name)).get("status", {}).get("phase")
        if phase == "Terminating":
            break
        await asyncio.sleep(0.1)
    yield name
    await kube.patch(CONFIGMAP, "held", {"metadata": {"finalizers": None}}, name)


async def test_a_refusal_in_a_terminating_namespace_does_not_break_other_requests(
    kube: Kube, namespace: str, terminating_namespace: str
) -> None:
    # The operator meets this after every deleted namespace: a 403 on an event or a status
    # write there. Through kr8s's session it closed the connections of every request in flight.
    async def create(i: int) -> str:
        body = {"metadata": {"name": f"c{i}", "namespace": namespace}, "data": {"k": "v" * 2000}}
        await kube.create(CONFIGMAP, body)
        return "created"

    async def refused() -> str:
        with pytest.raises(KubeError) as refusal:
            await kube.create(
                CONFIGMAP, {"metadata": {"name": "late", "namespace": terminating_namespace}}
            )
        assert refusal.value.status == 403
        assert refusal.value.namespace_terminating, refusal.value.message
        return "refused"

    results = await asyncio.gather(
        *(create(i) for i in range(30)),
        refused(),
        *(create(i) for i in range(30, 60)),
        return_exceptions=True,
    )
    assert [r for r in results if r != "created"] == ["refused"]
    assert len(await kube.list(CONFIGMAP, namespace)) >= 60


async def test_a_metadata_only_cache_never_holds_a_secret_s_data(
    kube: Kube, namespace: str
) -> None:
    """What the Ray controller's Secret cache gets from the apiserver: metadata, by list and by
    watch, never the token."""
    from ray_operator.kube import SECRET
    from ray_operator.runtime.informer import Informer
    from tests.waiting import eventually

    labels = {"app.kubernetes.io/managed-by": "ray-operator", "ray.kubeflow.org/cluster": "r"}
    body = {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "listed", "labels": labels}, "stringData": {"token": "s3cret"}}
    await kube.create(SECRET, body, namespace)
    cache = Informer(kube, SECRET, (namespace,), "ray.kubeflow.org/cluster", metadata_only=True)
    cache.start()
    try:
        await asyncio.wait_for(cache.synced.wait(), 30)
        watched = {**body, "metadata": {**body["metadata"], "name": "watched"}}
        await kube.create(SECRET, watched, namespace)
        await eventually(lambda: asyncio.sleep(0, cache.get(namespace, "watched")), bool,
                         what="the watched Secret in the cache")
        for name in ("listed", "watched"):
            cached = cache.get(namespace, name)
            assert cached is not None and cached["kind"] == "Secret"
            assert cached["metadata"]["labels"] == labels and cached["metadata"]["uid"]
            assert "data" not in cached and "stringData" not in cached
            assert "s3cret" not in str(cached) and "czNjcmV0" not in str(cached)  # nor base64
    finally:
        await cache.stop()


async def test_a_watch_event_far_larger_than_a_read_buffer_arrives_whole(
    kube: Kube, namespace: str
) -> None:
    """A ConfigMap near the apiserver's 1 MiB limit comes as one watch line of many chunks."""
    listing = await kube.list_all(CONFIGMAP, namespace)
    data = {f"k{i}": secrets.token_hex(40_000) for i in range(11)}  # 880 KB, no compression help
    events = kube.watch(CONFIGMAP, namespace, resource_version=listing.resource_version)
    big = {"metadata": {"name": "big", "namespace": namespace}, "data": data}
    await kube.create(CONFIGMAP, big)
    arrived: tuple[str, dict[str, object]] | None = None
    async with asyncio.timeout(30):
        async for event in events:
            if event[1]["metadata"]["name"] == "big":
                arrived = event
                break
    assert arrived is not None and arrived[0] == "ADDED" and arrived[1]["data"] == data



async def test_no_answer_is_one_error_type_naming_the_request(tmp_path: Path) -> None:
    """A refused connection is a KubeTransportError (what the runtime retries), not the HTTP
    library's own exception."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        config = tmp_path / "config"
        config.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                   "insecure-skip-tls-verify": True}}],
            "users": [{"name": "c", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
        }))
        kube = await Kube.connect(str(config))
        try:
            with pytest.raises(KubeTransportError) as failure:
                await kube.get(CONFIGMAP, "any", "default")
        finally:
            await kube.close()
    assert "GET /api/v1/namespaces/default/configmaps/any" in str(failure.value)
