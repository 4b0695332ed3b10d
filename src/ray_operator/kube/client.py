"""The one Kubernetes client of the project: a small typed facade over one HTTP session.

Every module that talks to Kubernetes (controllers, the job runner, the local pod runner, tests
and benchmarks) goes through :class:`Kube`, so that authentication, error types and request
counting live in one place. :mod:`ray_operator.kube.credentials` finds the credentials
(kubeconfig or in-cluster service account, kubectl's rules); requests go through this module's
own aiohttp session. aiohttp parses HTTP in C: a create costs the caller about a quarter of the
CPU it did through httpx's pure-Python stack (0.32 against 1.16 ms, benchmarks/client.py), and
in a burst of 1,000 Rays httpx had taken nearly half of the operator's CPU.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from ray_operator.api.constants import FIELD_MANAGER
from ray_operator.kube.credentials import Credentials, Endpoint
from ray_operator.kube.errors import KubeError, KubeTransportError, kube_error_from
from ray_operator.kube.kinds import KINDS_BY_NAME, Kind

# Objects' metadata only (the apiserver's PartialObjectMetadata), as lists and as watch events.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_OBJECT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

Obj = dict[str, Any]
# Called once per finished request with its verb and HTTP status (0: no answer): metrics.
RequestObserver = Callable[[str, int], None]


# No answer from the apiserver (refused, broken or timed out), as aiohttp and asyncio say it.
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


@contextlib.contextmanager
def _transport_errors(what: str) -> Iterator[None]:
    """Raise the transport's failures as :class:`KubeTransportError`, naming the request."""
    try:
        yield
    except _TRANSPORT_ERRORS as exc:
        raise KubeTransportError(f"{what}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Relayed:
    """A response relayed as it came: its status, its headers and its body's raw bytes."""

    status: int
    headers: Mapping[str, str]
    _response: aiohttp.ClientResponse
    _what: str

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk, as the backend sent it (not decompressed)."""
        while True:
            with _transport_errors(self._what):
                chunk = await self._response.content.readany()
            if not chunk:
                return
            yield chunk


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
        # Bounds the load one process puts on the apiserver, as client-go's rate limiter does
        # for Go controllers, and the connections it opens.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout_seconds
        self._http: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """Connect with a kubeconfig (``:``-separated paths), or in-cluster when None.

        Raises :class:`~ray_operator.kube.credentials.CredentialsError` naming what is wrong.
        """
        return cls(await Credentials(kubeconfig, context).load())

    def sibling(self) -> Kube:
        """Another client with the same credentials and counters of its own."""
        return Kube(self.credentials, timeout_seconds=self._timeout)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            # Every open watch holds a connection, and a pool limit would make a request wait
            # for a watch to end; the watches and the in-flight limit bound the connections.
            # Not trust_env: aiohttp would then read ~/.netrc and the proxy settings in a thread
            # for every request (half the client's CPU); the proxy is found once, in _proxy.
            tls = self.credentials.endpoint.ssl_context()
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=tls),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._proxy = _proxy_for(self.credentials.endpoint)
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
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        check: bool = True,
        decompress: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request, its response open for the block.

        A refusal raises :class:`KubeError`, unless ``check`` is False: then every answer but a
        401 is the caller's. No answer raises :class:`KubeTransportError`.
        """
        session = self._session()
        endpoint = self.credentials.endpoint
        # The path is sent as given (already escaped, e.g. a relayed one); params are escaped.
        url = URL(endpoint.server.rstrip("/") + path, encoded=True)
        if params:
            url = url.update_query(params)
        seconds = timeout if timeout is not None else self._timeout
        # Like httpx's timeout: for connecting and for each read, not for the whole response.
        limits = aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
        what = f"{method} {path}"
        for attempt in (1, 2):
            sent, token = await self._headers(content_type, headers)
            try:
                with _transport_errors(what):
                    response = await session.request(
                        method,
                        url,
                        data=content,
                        headers=sent,
                        timeout=limits,
                        server_hostname=endpoint.tls_server_name,
                        proxy=self._proxy,
                        auto_decompress=decompress,
                    )
            except KubeTransportError:
                self._observe(method, 0)
                raise
            try:
                if response.status == 401 and attempt == 1:
                    # An expired or rotated token: read the credentials again, once.
                    self._observe(method, 401)
                    await self.credentials.renew(token)
                    continue
                self._observe(method, response.status)
                if check and response.status >= 400:
                    with _transport_errors(what):
                        body = await response.read()
                    raise kube_error_from(response.status, body, f"{what}: {response.status}")
                yield response
                return
            finally:
                response.release()

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
            with _transport_errors(f"{method} {path}"):
                answer = await resp.read()
            result: Obj = json.loads(answer) if answer else {}
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
            timeout=timeout_seconds + 10,
            headers={"accept": METADATA_OBJECT} if metadata_only else None,
        ) as resp:
            async for line in _lines(resp, f"watch {kind.path(namespace)}"):
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
    ) -> AsyncIterator[Relayed]:
        """A request through the apiserver's proxy (``.../services/NAME:PORT/proxy/...``).

        The response is streamed and returned whatever its status: the answer is the backend's.
        """
        self.requests += 1
        async with self._send(
            method, path, params, content, None, headers=headers, check=False, decompress=False
        ) as resp:
            yield Relayed(resp.status, resp.headers, resp, f"{method} {path}")

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._http is not None:
            await self._http.close()
            self._http = None


def _proxy_for(endpoint: Endpoint) -> str | None:
    """The proxy to reach the apiserver through: kubectl's rule.

    The kubeconfig's proxy-url, else HTTPS_PROXY or HTTP_PROXY unless NO_PROXY names the server.
    """
    if endpoint.proxy:
        return endpoint.proxy
    server = URL(endpoint.server)
    if not server.host or urllib.request.proxy_bypass(server.host):
        return None
    return urllib.request.getproxies_environment().get(server.scheme or "https")


async def _lines(response: aiohttp.ClientResponse, what: str) -> AsyncIterator[bytes]:
    """The body's non-empty lines, however long (aiohttp's own readline stops at 128 KiB)."""
    parts: list[bytes] = []
    while True:
        with _transport_errors(what):
            chunk = await response.content.readany()
        if not chunk:
            break
        if b"\n" not in chunk:
            parts.append(chunk)  # joined once its line ends: a large object comes in many chunks
            continue
        *complete, rest = b"".join([*parts, chunk]).split(b"\n")
        parts = [rest] if rest else []
        for line in complete:
            if line.strip():
                yield line
    last = b"".join(parts)
    if last.strip():
        yield last
