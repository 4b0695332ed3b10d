"""``ray-operator dashboard NAME``: a cluster's dashboard and job API on a local URL.

Each request to the local address goes through the apiserver's service proxy to the head
Service's dashboard port, with the caller's own kubeconfig credentials. It needs nothing in the
cluster but the right to ``get services/proxy`` in the namespace, and unlike ``kubectl
port-forward`` it does not depend on the kubelet's streaming API (absent on the project's local
cluster, blocked by some corporate proxies): plain HTTPS to the apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from aiohttp import web

from ray_operator.builders.ray_cluster import head_name
from ray_operator.kube import RAY, SERVICE, CredentialsError, Kube, KubeError, KubeTransportError

Obj = dict[str, Any]
DASHBOARD_PORT = 8265
# Headers that belong to one hop (RFC 9110 7.6.1), and the caller's own: the apiserver gets ours.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "cookie",
    }
)


class DashboardError(RuntimeError):
    """The dashboard cannot be reached; the message names the object and what to do."""


@dataclass(frozen=True)
class Target:
    """Where the proxied requests go."""

    namespace: str
    service: str
    port: str  # the Service port's name, else its number
    healthy: bool
    health_reason: str

    @property
    def prefix(self) -> str:
        """The apiserver path of the Service port's proxy."""
        return (
            f"/api/v1/namespaces/{self.namespace}/services/http:{self.service}:{self.port}/proxy"
        )


def default_kubeconfig() -> str | None:
    """``KUBECONFIG``, else ``~/.kube/config`` when it exists, else None (in a pod)."""
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    home = Path.home() / ".kube" / "config"
    return str(home) if home.is_file() else None


def dashboard_port(service: Obj) -> str:
    """The head Service's dashboard port: the one named ``dashboard``, else number 8265."""
    ports = (service.get("spec") or {}).get("ports") or []
    for port in ports:
        if port.get("name") == "dashboard":
            return "dashboard"
    for port in ports:
        if port.get("port") == DASHBOARD_PORT:
            return str(port.get("name") or DASHBOARD_PORT)
    listed = ", ".join(f"{p.get('name') or '-'}={p.get('port')}" for p in ports) or "none"
    name = service["metadata"]["name"]
    raise DashboardError(
        f"Service {name} has no dashboard port (one named 'dashboard' or port {DASHBOARD_PORT}); "
        f"its ports: {listed}. The head container must expose containerPort {DASHBOARD_PORT}."
    )


async def find_target(kube: Kube, name: str, namespace: str) -> Target:
    """The head Service of Ray ``namespace/name`` and its dashboard port."""
    try:
        ray = await kube.get_or_none(RAY, name, namespace)
        if ray is None:
            raise DashboardError(
                f"Ray {name!r} not found in namespace {namespace!r} "
                f"(kubectl get rays -n {namespace} lists them)"
            )
        service = await kube.get_or_none(SERVICE, head_name(name), namespace)
    except KubeError as exc:
        raise DashboardError(f"cannot read Ray {namespace}/{name}: {exc}") from None
    if service is None:
        raise DashboardError(
            f"Ray {namespace}/{name} has no head Service {head_name(name)} yet: "
            "is the operator running? (kubectl describe ray shows its events)"
        )
    status = ray.get("status") or {}
    return Target(
        namespace,
        head_name(name),
        dashboard_port(service),
        status.get("health") == "True",
        str(status.get("reason") or status.get("health") or "no status yet"),
    )


def proxy_handler(kube: Kube, target: Target, hosts: set[str]) -> Any:
    """An aiohttp handler that relays every request to the head's dashboard port.

    Only to that port: a path that climbs out of it (``..``) is refused, since the apiserver
    would resolve it against its own API with the user's credentials; and only for a Host this
    server listens as (``hosts``), so that a web page cannot reach it by DNS rebinding.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.host not in hosts:
            return web.Response(status=403, text=f"Host {request.host!r} is not served here\n")
        if any(part in (".", "..") for part in request.path.split("/")):
            return web.Response(status=400, text="paths with . or .. segments are refused\n")
        path = request.raw_path
        # The apiserver writes its proxy prefix into links of the HTML it relays: take it off.
        if path.startswith(target.prefix):
            path = path[len(target.prefix) :] or "/"
        headers = {
            k.lower(): v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED
        }
        # The apiserver takes Authorization as the user's own credentials: a Ray token the
        # caller sends goes on as Ray's proxy header (X-Ray-Authorization).
        ray_token = request.headers.get("authorization")
        if ray_token and "x-ray-authorization" not in headers:
            headers["x-ray-authorization"] = ray_token
        # Raw bytes are relayed: ask for no encoding the caller did not ask for.
        headers.setdefault("accept-encoding", "identity")
        body = await request.read() if request.can_read_body else None
        response: web.StreamResponse | None = None
        try:
            async with kube.proxy(
                request.method, target.prefix + path, {}, body or None, headers
            ) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        k: v
                        for k, v in upstream.headers.items()
                        if k.lower() not in _NOT_FORWARDED and k.lower() != "set-cookie"
                    },
                )
                await response.prepare(request)
                async for chunk in upstream.chunks():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except KubeTransportError as exc:
            if response is not None and response.prepared:
                raise  # half sent: aiohttp drops the connection, the client sees it cut
            return web.Response(status=502, text=f"the apiserver did not answer: {exc}\n")

    return handle


async def serve(kube: Kube, target: Target, address: str, port: int) -> tuple[web.AppRunner, str]:
    """Listen on ``address:port``; returns the runner and the URL."""
    hosts: set[str] = set()
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", proxy_handler(kube, target, hosts))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, address, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise DashboardError(
            f"cannot listen on {address}:{port}: {exc.strerror or exc}; choose another --port "
            "(0 picks a free one)"
        ) from None
    host, bound = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    hosts.update({f"{shown}:{bound}", f"localhost:{bound}", f"127.0.0.1:{bound}"})
    return runner, f"http://{shown}:{bound}"


def dashboard(
    name: Annotated[str, typer.Argument(help="The Ray resource.")],
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", "-n", help="Its namespace (default: the context's)."),
    ] = None,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Local port (0: any free one).")
    ] = DASHBOARD_PORT,
    address: Annotated[str, typer.Option(help="Local address to listen on.")] = "127.0.0.1",
    context: Annotated[
        str | None, typer.Option(help="The kubeconfig context (default: its current one).")
    ] = None,
) -> None:
    """Serve the dashboard and job API of a Ray cluster on a local URL, until Ctrl-C.

    Goes through the apiserver's service proxy with your kubeconfig (KUBECONFIG, else
    ~/.kube/config): you need get on services/proxy in the namespace. The job commands work
    through it too: ray-operator job submit SCRIPT.py --address URL.
    """
    try:
        asyncio.run(_dashboard(name, namespace, port, address, context))
    except (DashboardError, CredentialsError) as exc:
        typer.echo(f"ray-operator dashboard: {exc}", err=True)
        raise typer.Exit(1 if isinstance(exc, DashboardError) else 2) from None


async def _dashboard(
    name: str, namespace: str | None, port: int, address: str, context: str | None
) -> None:
    kube = await Kube.connect(default_kubeconfig(), context)
    try:
        ns = namespace or kube.credentials.namespace
        target = await find_target(kube, name, ns)
        runner, url = await serve(kube, target, address, port)
        if not target.healthy:
            typer.echo(
                f"note: Ray {ns}/{name} is not Healthy ({target.health_reason}); the dashboard "
                "answers once its head is Ready",
                err=True,
            )
        if address not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(
                f"warning: listening on {address}: whoever reaches it runs jobs on the cluster "
                "with your credentials' access to it",
                err=True,
            )
        typer.echo(f"Dashboard of Ray {ns}/{name}: {url}  (Ctrl-C to stop)")
        # Log following is a WebSocket, which this relay does not carry: poll the log instead.
        typer.echo(f"Jobs: ray-operator job submit SCRIPT.py --address {url}, then job logs ID")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()
        await runner.cleanup()
    finally:
        await kube.close()


def register(app: typer.Typer) -> None:
    """Add the command to the ``ray-operator`` app."""
    app.command()(dashboard)
