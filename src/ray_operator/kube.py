"""The one Kubernetes client of the project: a small typed facade over one HTTP session.

Every module that talks to Kubernetes (controllers, the job runner, the local pod runner, tests
and benchmarks) goes through :class:`Kube`, so that authentication, error types and request
counting live in one place. kr8s finds the credentials (kubeconfig or in-cluster service
account); the requests go through this module's own httpx client.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import warnings
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import kr8s.asyncio

from ray_operator.api.constants import API_VERSION, FIELD_MANAGER

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """Where a kind of object lives in the API."""

    api_version: str
    plural: str
    kind: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The URL path of the collection, or of one object when ``name`` is given."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


DEPLOYMENT: Final = Kind("apps/v1", "deployments", "Deployment")
REPLICASET: Final = Kind("apps/v1", "replicasets", "ReplicaSet")
SERVICE: Final = Kind("v1", "services", "Service")
ENDPOINTS: Final = Kind("v1", "endpoints", "Endpoints")
POD: Final = Kind("v1", "pods", "Pod")
CONFIGMAP: Final = Kind("v1", "configmaps", "ConfigMap")
SECRET: Final = Kind("v1", "secrets", "Secret")
EVENT: Final = Kind("v1", "events", "Event")
NAMESPACE: Final = Kind("v1", "namespaces", "Namespace", namespaced=False)
NODE: Final = Kind("v1", "nodes", "Node", namespaced=False)
SERVICE_ACCOUNT: Final = Kind("v1", "serviceaccounts", "ServiceAccount")
ROLE: Final = Kind("rbac.authorization.k8s.io/v1", "roles", "Role")
ROLE_BINDING: Final = Kind("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding")
CRD: Final = Kind(
    "apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
RAY: Final = Kind(API_VERSION, "rays", "Ray")
RAYJOB: Final = Kind(API_VERSION, "rayjobs", "RayJob")
RAYPIPELINE: Final = Kind(API_VERSION, "raypipelines", "RayPipeline")

KINDS_BY_NAME: Final = {
    k.kind: k
    for k in (
        DEPLOYMENT,
        REPLICASET,
        SERVICE,
        ENDPOINTS,
        POD,
        CONFIGMAP,
        SECRET,
        EVENT,
        NAMESPACE,
        SERVICE_ACCOUNT,
        ROLE,
        ROLE_BINDING,
        CRD,
        RAY,
        RAYJOB,
        RAYPIPELINE,
        Kind("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
        Kind("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
        Kind("batch/v1", "jobs", "Job"),
    )
}


class KubeError(RuntimeError):
    """The apiserver refused a request; ``status`` is the HTTP code, ``reason`` its reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        """The object does not exist."""
        return self.status == 404

    @property
    def namespace_terminating(self) -> bool:
        """Refused because the namespace is being deleted (nothing new can be created there)."""
        return self.status == 403 and "being terminated" in self.message

    @property
    def conflict(self) -> bool:
        """Already exists, or written by someone else since it was read."""
        return self.status == 409


class Kube:
    """Async access to one apiserver, counting the requests it makes."""

    def __init__(
        self, api: kr8s.asyncio.Api, max_in_flight: int = 8, timeout_seconds: float = 60.0
    ) -> None:
        self.api = api
        self.requests = 0
        # Well below httpx's 20 kept-alive connections: more requests at once only wait in
        # httpcore's pool, which rescans every connection for each of them, and those above 20
        # open a fresh TLS connection each (a burst of reconciles spent half its CPU there).
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout_seconds
        self._http: httpx.AsyncClient | None = None
        self._reauth = asyncio.Lock()

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        """Connect with a kubeconfig file, or in-cluster with the pod's service account."""
        with warnings.catch_warnings():
            # kr8s warns about apiservers older than it knows; the project tests against 1.20.
            warnings.filterwarnings("ignore", message="Kubernetes version", category=UserWarning)
            api = await (
                kr8s.asyncio.api(kubeconfig=kubeconfig) if kubeconfig else kr8s.asyncio.api()
            )
        return cls(api)

    async def _client(self) -> httpx.AsyncClient:
        # Our own session, not kr8s's call_api: on any 403 that one closes and replaces the
        # session it shares with every request in flight, so a write refused in a terminating
        # namespace broke unrelated requests (ReadError) and lost their events.
        if self._http is None:
            auth = self.api.auth
            self._http = httpx.AsyncClient(
                base_url=auth.server,
                verify=await auth.ssl_context(),  # type: ignore[no-untyped-call]
                timeout=self._timeout,
                proxy=auth.proxy,
            )
        return self._http

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if self.api.auth.token:
            headers["authorization"] = f"Bearer {self.api.auth.token}"
        if content_type:
            headers["content-type"] = content_type
        return headers

    async def _reauthenticate(self, token_sent: str | None) -> None:
        """Reload credentials after a 401 (a rotated service account token), once per rotation."""
        async with self._reauth:
            if self.api.auth.token == token_sent:
                await self.api.auth.reauthenticate()

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
    ) -> AsyncIterator[httpx.Response]:
        """One request, its response open for the block; a refusal raises :class:`KubeError`."""
        client = await self._client()
        extensions = {}
        if self.api.auth.tls_server_name:
            extensions["sni_hostname"] = self.api.auth.tls_server_name
        for attempt in (1, 2):
            token = self.api.auth.token
            request = client.build_request(
                method,
                path,
                params=dict(params or {}),
                content=content,
                headers=self._headers(content_type),
                extensions=extensions,
                timeout=timeout if timeout is not None else self._timeout,
            )
            response = await client.send(request, stream=stream)
            try:
                if response.status_code == 401 and attempt == 1:
                    await self._reauthenticate(token)
                    continue
                if response.is_error:
                    await response.aread()
                    raise _kube_error(response, f"{method} {path}: {response.status_code}")
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
    ) -> Obj:
        """One API call; raises :class:`KubeError` on a refusal."""
        self.requests += 1
        content = json.dumps(body).encode() if body is not None else None
        async with (
            self._in_flight,
            self._send(
                method, path, params, content, content_type if body is not None else None
            ) as resp,
        ):
            result: Obj = resp.json() if resp.content else {}
            return result

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        """Read one object."""
        return await self.request("GET", kind.path(namespace, name))

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
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", kind.path(namespace), params=params)
        items: list[Obj] = result.get("items", [])
        return items

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
        self, kind: Kind, name: str, namespace: str | None = None, propagation: str = "Background"
    ) -> bool:
        """Delete an object; False when it was already gone."""
        try:
            await self.request(
                "DELETE",
                kind.path(namespace, name),
                {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
            )
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
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Yield ``(type, object)`` for each change until the server ends the watch."""
        params = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
        if label_selector:
            params["labelSelector"] = label_selector
        if resource_version:
            params["resourceVersion"] = resource_version
        self.requests += 1
        async with self._send(
            "GET", kind.path(namespace), params, stream=True, timeout=timeout_seconds + 10
        ) as resp:
            async for line in resp.aiter_lines():
                if line.strip():
                    event = json.loads(line)
                    yield event["type"], event["object"]

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        session = getattr(self.api, "_session", None)  # kr8s opens one to read the version
        if session is not None:
            await session.aclose()


def _kube_error(response: httpx.Response | None, text: str) -> KubeError:
    if response is None:
        return KubeError(0, "Unknown", text)
    try:
        status = response.json()
        return KubeError(
            response.status_code, status.get("reason", ""), status.get("message", text)
        )
    except (ValueError, AttributeError):
        return KubeError(response.status_code, "", response.text or text)
