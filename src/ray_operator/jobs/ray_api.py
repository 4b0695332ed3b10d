"""A small async client of Ray's job REST API (the dashboard port, 8265).

It speaks HTTP with ``httpx`` (and a WebSocket with ``aiohttp`` for live logs) instead of importing
``ray``: the job runner must stay small (well under 150 MB RSS) and its image must not need Ray.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
import httpx

PENDING: Final = "PENDING"
RUNNING: Final = "RUNNING"
SUCCEEDED: Final = "SUCCEEDED"
FAILED: Final = "FAILED"
STOPPED: Final = "STOPPED"
TERMINAL_STATES: Final = frozenset({SUCCEEDED, FAILED, STOPPED})


class RayApiError(RuntimeError):
    """The job API answered with an error; ``status`` is the HTTP code."""

    def __init__(self, address: str, status: int, text: str) -> None:
        self.message = _short(text)
        super().__init__(f"Ray job API at {address} answered {status}: {self.message}")
        self.address = address
        self.status = status
        self.text = text


class RayJobNotFoundError(RayApiError):
    """No job with that submission id exists on the cluster."""


class RayUnreachableError(RuntimeError):
    """The job API could not be reached at all (connection refused, DNS, timeout)."""

    def __init__(self, address: str, error: str) -> None:
        super().__init__(f"Ray job API at {address} is unreachable: {error}")
        self.address = address
        self.error = error


class RayAddressError(RayUnreachableError):
    """The address is not a job API URL at all (``ray://``, a GCS port): said before any call."""

    def __init__(self, address: str, error: str) -> None:
        RuntimeError.__init__(self, f"{address!r} is not a Ray job API address: {error}")
        self.address = address
        self.error = error


def job_api_url(address: str) -> str:
    """``address`` as the job API's base URL; :class:`RayAddressError` when it cannot be one."""
    url = address.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    if scheme.lower() not in ("http", "https"):
        hint = f"http://{host.rsplit(':', 1)[0]}:8265" if host else "http://HEAD:8265"
        raise RayAddressError(
            address,
            f"{scheme}:// is {'the Ray client' if scheme == 'ray' else 'not HTTP'}; the job API is "
            f"the dashboard's HTTP port, e.g. {hint}",
        )
    if host.endswith((":6379", ":10001")):
        port = host.rsplit(":", 1)[1]
        what = "the GCS" if port == "6379" else "the Ray client server"
        raise RayAddressError(
            address, f"port {port} is {what}; the job API is on the dashboard port, usually 8265"
        )
    return url


@dataclass(frozen=True)
class JobInfo:
    """What Ray reports about one submitted job."""

    submission_id: str
    status: str
    message: str = ""
    entrypoint: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """The job will not change state again."""
        return self.status in TERMINAL_STATES

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> JobInfo:
        """Read one job from the API's JSON (times are epoch milliseconds)."""
        return cls(
            submission_id=str(data.get("submission_id") or data.get("job_id") or ""),
            status=str(data.get("status", "")),
            message=str(data.get("message") or ""),
            entrypoint=str(data.get("entrypoint") or ""),
            start_time=_from_millis(data.get("start_time")),
            end_time=_from_millis(data.get("end_time")),
            metadata=dict(data.get("metadata") or {}),
        )


def _from_millis(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


class RayJobsClient:
    """Submit, follow and stop jobs on one Ray cluster through its dashboard's job API."""

    def __init__(self, address: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.address = job_api_url(address)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.address, headers=self._headers, timeout=timeout
        )

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = await self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise RayUnreachableError(self.address, f"{type(exc).__name__}: {exc}") from None
        if resp.status_code == 404:
            raise RayJobNotFoundError(self.address, 404, resp.text)
        if resp.status_code >= 400:
            raise RayApiError(self.address, resp.status_code, resp.text)
        return resp.json()

    async def upload_working_dir(self, files: Mapping[str, bytes]) -> str:
        """Upload files as a working directory; returns the URI for ``runtime_env``.

        The zip is deterministic, so the same files are uploaded once.
        """
        data = _zip(files)
        uri = f"gcs://_ray_pkg_{hashlib.blake2b(data, digest_size=16).hexdigest()}.zip"
        path = f"/api/packages/gcs/{uri.removeprefix('gcs://')}"
        try:
            resp = await self._http.get(path)
            if resp.status_code == 200:
                return uri
            resp = await self._http.put(path, content=data)
        except httpx.TransportError as exc:
            raise RayUnreachableError(self.address, f"{type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            raise RayApiError(self.address, resp.status_code, resp.text)
        return uri

    async def submit(
        self,
        entrypoint: str,
        *,
        submission_id: str,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        entrypoint_num_cpus: float | None = None,
    ) -> str:
        """Submit a job under ``submission_id``; a job that already has that id counts as done."""
        body: dict[str, Any] = {"entrypoint": entrypoint, "submission_id": submission_id}
        if runtime_env:
            body["runtime_env"] = runtime_env
        if metadata:
            body["metadata"] = metadata
        if entrypoint_num_cpus is not None:
            body["entrypoint_num_cpus"] = entrypoint_num_cpus
        try:
            result = await self._call("POST", "/api/jobs/", body)
        except RayApiError as exc:
            # Submitting twice with one id is how a restarted runner resumes: not an error.
            # (The head relays the agent's 400 inside a 500 traceback, so read the whole text.)
            if exc.status in (400, 500) and f"{submission_id} already exists" in exc.text:
                return submission_id
            raise
        return str(result.get("submission_id") or submission_id)

    async def info(self, submission_id: str) -> JobInfo:
        """The job's current state."""
        return JobInfo.from_api(await self._call("GET", f"/api/jobs/{submission_id}"))

    async def logs(self, submission_id: str) -> str:
        """The job's whole log so far."""
        result = await self._call("GET", f"/api/jobs/{submission_id}/logs")
        return str(result.get("logs") or "")

    async def tail_logs(self, submission_id: str) -> AsyncIterator[str]:
        """Yield chunks of the job's log as it runs, ending when the job ends."""
        await self.info(submission_id)  # a clear RayJobNotFoundError before the WebSocket
        url = f"{self.address}/api/jobs/{submission_id}/logs/tail".replace("http", "ws", 1)
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout)
        try:
            async with aiohttp.ClientSession(headers=self._headers, timeout=timeout) as session:
                # Pings find a connection that died half-open; a quiet job is not one.
                async with session.ws_connect(url, heartbeat=30) as ws:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            yield str(msg.data)
                        elif msg.type == aiohttp.WSMsgType.ERROR:
                            raise RayUnreachableError(
                                self.address, f"log stream broken: {ws.exception()}"
                            )
                    # The stream of an ended job closes normally; anything else cut it short.
                    if ws.close_code not in (None, aiohttp.WSCloseCode.OK):
                        raise RayUnreachableError(
                            self.address, f"log stream closed with code {ws.close_code}"
                        )
        except aiohttp.WSServerHandshakeError as exc:
            raise RayApiError(self.address, exc.status, exc.message) from None
        except aiohttp.ClientConnectionError as exc:
            raise RayUnreachableError(self.address, f"{type(exc).__name__}: {exc}") from None

    async def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job; False when it had already ended."""
        result = await self._call("POST", f"/api/jobs/{submission_id}/stop")
        return bool(result.get("stopped"))

    async def list(self) -> list[JobInfo]:
        """Every job the cluster knows."""
        result = await self._call("GET", "/api/jobs/")
        return [JobInfo.from_api(item) for item in result]

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def __aenter__(self) -> RayJobsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception): .+")
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _zip(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name], zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _short(text: str, limit: int = 500) -> str:
    """A server traceback's last exception line says what went wrong; keep messages short."""
    text = text.strip()
    if text[:200].lower().lstrip().startswith(("<!doctype html", "<html")):
        title = _HTML_TITLE.search(text)
        named = f" titled {' '.join(title.group(1).split())!r}" if title else ""
        return (
            f"an HTML page{named}, not the job API's JSON: is this address the Ray dashboard "
            "(port 8265), and not a proxy or another service?"
        )
    if text.startswith("Traceback"):
        found = [line for line in text.splitlines() if _EXCEPTION_LINE.match(line)]
        if found:
            text = found[-1]
    return text[:limit]
