"""The one Kubernetes client of the project: a small typed facade over one HTTP session.

Every module that talks to Kubernetes (controllers, the job runner, the local pod runner, tests
and benchmarks) goes through :class:`Kube`, so that authentication, error types and request
counting live in one place. :mod:`ray_operator.kube.credentials` finds the credentials
(kubeconfig or in-cluster service account, kubectl's rules); requests go through this module's
own httpx client.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ray_operator.api.constants import FIELD_MANAGER
from ray_operator.kube.credentials import Credentials
from ray_operator.kube.errors import KubeError, kube_error_from
from ray_operator.kube.kinds import KINDS_BY_NAME, Kind

# Objects' metadata only (the apiserver's PartialObjectMetadata), as lists and as watch events.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_OBJECT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

Obj = dict[str, Any]
# Called once per finished request with its verb and HTTP status (0: no answer): metrics.
RequestObserver = Callable[[str, int], None]


@dataclass(frozen=True)
class Listing:
    """A whole collection as one consistent read: its items and the version to watch from."""

    items: list[Obj]
    resource_version: str


class Kube:
    """Async access to one apiserver, counting the requests it makes."""

    def __init__(
        self,
        credentials: Credentials,
        max_in_flight: int = 8,
        timeout_seconds: float = 60.0,
        observer: RequestObserver | None = None,
        user_agent: str = "ray-operator",
    ) -> None:
        self.credentials = credentials
        # Names this process in the apiserver's audit log (replicas share a ServiceAccount).
        self.user_agent = user_agent
        self.requests = 0
        self.observer = observer
        # More requests at once only wait in httpcore's pool, which rescans every connection for
        # each of them (a burst of reconciles spent half its CPU there).
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout_seconds
        self._http: httpx.AsyncClient | None = None

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """Connect with a kubeconfig (``:``-separated paths), or in-cluster when None.

        Raises :class:`~ray_operator.kube.credentials.CredentialsError` naming what is wrong.
        """
        return cls(await Credentials(kubeconfig, context).load())

    def sibling(self) -> Kube:
        """Another client with the same credentials and counters of its own."""
        return Kube(self.credentials, timeout_seconds=self._timeout)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            endpoint = self.credentials.endpoint
            self._http = httpx.AsyncClient(
                base_url=endpoint.server,
                verify=endpoint.ssl_context(),
                timeout=self._timeout,
                proxy=endpoint.proxy,
                # Every open watch holds a connection. With httpx's defaults (20 kept alive,
                # 100 at most) an operator with 13 watches and 8 requests in flight closed a
                # connection after nearly every request and opened a new TLS one for the next
                # (2,000 handshakes in a burst of 1,000 Rays), and one watching more namespaces
                # would wait for a watch to end before a request could go. The watches and the
                # in-flight limit bound the connections; the pool need not.
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            )
        return self._http

    async def _headers(
        self, content_type: str | None, extra: Mapping[str, str] | None = None
    ) -> tuple[dict[str, str], str | None]:
        headers = {"accept": "application/json", "user-agent": self.user_agent, **(extra or {})}
        token = await self.credentials.authorization()
        if token:
            headers["authorization"] = token
        if content_type:
            headers["content-type"] = content_type
        return headers, token

    def _observe(self, method: str, status: int) -> None:
        if self.observer is not None:
            self.observer(method, status)

    @contextlib.asynccontextmanager
    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        stream: bool = False,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """One request, its response open for the block.

        A refusal raises :class:`KubeError`, unless ``check`` is False: then every answer but a
        401 is the caller's.
        """
        client = self._client()
        extensions = {}
        server_name = self.credentials.endpoint.tls_server_name
        if server_name:
            extensions["sni_hostname"] = server_name
        for attempt in (1, 2):
            sent, token = await self._headers(content_type, headers)
            request = client.build_request(
                method,
                path,
                params=dict(params or {}),
                content=content,
                headers=sent,
                extensions=extensions,
                timeout=timeout if timeout is not None else self._timeout,
            )
            try:
                response = await client.send(request, stream=stream)
            except httpx.HTTPError:
                self._observe(method, 0)
                raise
            try:
                if response.status_code == 401 and attempt == 1:
                    # An expired or rotated token: read the credentials again, once.
                    self._observe(method, 401)
                    await self.credentials.renew(token)
                    continue
                self._observe(method, response.status_code)
                if check and response.is_error:
                    await response.aread()
                    raise kube_error_from(response, f"{method} {path}: {response.status_code}")
                yield response
                return
            finally:
                await response.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Obj | builtins.list[Obj] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        accept: str | None = None,
    ) -> Obj:
        """One API call; raises :class:`KubeError` on a refusal."""
        self.requests += 1
        content = json.dumps(body).encode() if body is not None else None
        async with (
            self._in_flight,
            self._send(
                method,
                path,
                params,
                content,
                content_type if body is not None else None,
                headers={"accept": accept} if accept else None,
            ) as resp,
        ):
            result: Obj = resp.json() if resp.content else {}
            return result

    async def get(
        self, kind: Kind, name: str, namespace: str | None = None, metadata_only: bool = False
    ) -> Obj:
        """Read one object (``metadata_only``: its metadata, as PartialObjectMetadata)."""
        accept = METADATA_OBJECT if metadata_only else None
        return await self.request("GET", kind.path(namespace, name), accept=accept)

    async def get_or_none(self, kind: Kind, name: str, namespace: str | None = None) -> Obj | None:
        """Read one object, or None when it does not exist."""
        try:
            return await self.get(kind, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def list(  # noqa: A003 - the verb's name in Kubernetes
        self, kind: Kind, namespace: str | None = None, label_selector: str | None = None
    ) -> builtins.list[Obj]:
        """List objects, in one namespace or all."""
        return (await self.list_all(kind, namespace, label_selector)).items

    async def list_all(
        self,
        kind: Kind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        metadata_only: bool = False,
    ) -> Listing:
        """Every object of a collection, page by page, and the version the listing is at.

        ``metadata_only``: each object's metadata alone (PartialObjectMetadata), e.g. for a
        Secret whose data the caller must not hold.
        """
        params = {"limit": str(page_size)}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        items: list[Obj] = []
        while True:
            page = await self.request(
                "GET",
                kind.path(namespace),
                params=params,
                accept=METADATA_LIST if metadata_only else None,
            )
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return Listing(items, str(meta.get("resourceVersion", "")))
            params = {**params, "continue": meta["continue"]}

    async def create(self, kind: Kind, body: Obj, namespace: str | None = None) -> Obj:
        """Create an object."""
        ns = namespace or body.get("metadata", {}).get("namespace")
        return await self.request(
            "POST", kind.path(ns), body, params={"fieldManager": FIELD_MANAGER}
        )

    async def replace(self, kind: Kind, body: Obj) -> Obj:
        """Replace an object (its ``metadata.resourceVersion`` guards against lost updates)."""
        meta = body["metadata"]
        return await self.request(
            "PUT",
            kind.path(meta.get("namespace"), meta["name"]),
            body,
            params={"fieldManager": FIELD_MANAGER},
        )

    async def patch(
        self,
        kind: Kind,
        name: str,
        patch: Obj | builtins.list[Obj],
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: str = "merge",
    ) -> Obj:
        """Patch an object or one of its subresources (``status``, ``scale``)."""
        path = kind.path(namespace, name) + (f"/{subresource}" if subresource else "")
        content_type = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }[patch_type]
        return await self.request(
            "PATCH", path, patch, params={"fieldManager": FIELD_MANAGER}, content_type=content_type
        )

    async def delete(
        self,
        kind: Kind,
        name: str,
        namespace: str | None = None,
        propagation: str = "Background",
        uid: str | None = None,
    ) -> bool:
        """Delete an object (only that very one when ``uid`` is given); False when gone."""
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        options["propagationPolicy"] = propagation
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", kind.path(namespace, name), options)
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True

    async def apply_manifest(self, body: Obj, namespace: str | None = None) -> Obj:
        """Create an object from a manifest, replacing it when it already exists."""
        kind = KINDS_BY_NAME[body["kind"]]
        ns = (namespace or body.get("metadata", {}).get("namespace")) if kind.namespaced else None
        if ns:
            body = {**body, "metadata": {**body["metadata"], "namespace": ns}}
        try:
            return await self.create(kind, body, ns)
        except KubeError as exc:
            if not exc.conflict:
                raise
        current = await self.get(kind, body["metadata"]["name"], ns)
        merged = {**body, "metadata": {**body["metadata"]}}
        merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if body["kind"] == "Service":
            merged["spec"] = {**body.get("spec", {}), "clusterIP": current["spec"].get("clusterIP")}
        return await self.replace(kind, merged)

    async def watch(
        self,
        kind: Kind,
        namespace: str | None = None,
        label_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        field_selector: str | None = None,
        bookmarks: bool = False,
        metadata_only: bool = False,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Yield ``(type, object)`` for each change until the server ends the watch.

        An ``ERROR`` event (410 Gone: the version is compacted away) raises :class:`KubeError`.
        """
        params = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if resource_version:
            params["resourceVersion"] = resource_version
        if bookmarks:
            params["allowWatchBookmarks"] = "true"
        self.requests += 1
        async with self._send(
            "GET",
            kind.path(namespace),
            params,
            stream=True,
            timeout=timeout_seconds + 10,
            headers={"accept": METADATA_OBJECT} if metadata_only else None,
        ) as resp:
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event.get("object") or {}
                    raise KubeError(
                        int(status.get("code") or 500),
                        str(status.get("reason") or ""),
                        str(status.get("message") or "watch error"),
                    )
                yield event["type"], event["object"]

    @contextlib.asynccontextmanager
    async def proxy(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        content: bytes | None,
        headers: Mapping[str, str],
    ) -> AsyncIterator[httpx.Response]:
        """A request through the apiserver's proxy (``.../services/NAME:PORT/proxy/...``).

        The response is streamed and returned whatever its status: the answer is the backend's.
        """
        self.requests += 1
        async with self._send(
            method, path, params, content, None, stream=True, headers=headers, check=False
        ) as resp:
            yield resp

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
