"""Post Kubernetes Events about a resource, as ``kubectl describe`` shows them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from ray_operator.api.constants import MANAGED_BY
from ray_operator.kube import EVENT, Kube, KubeError, KubeTransportError

log = logging.getLogger(__name__)


def now_rfc3339() -> str:
    """The current UTC time, as Kubernetes writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def post_event(
    kube: Kube,
    involved: dict[str, Any],
    kind: str,
    reason: str,
    message: str,
    attempts: int = 3,
) -> None:
    """Post one event (``kind`` is Normal or Warning); a failure to post is logged, not raised."""
    meta = involved["metadata"]
    now = now_rfc3339()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta.get("namespace", "default"),
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": kind,
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    for attempt in range(1, attempts + 1):
        try:
            await kube.create(EVENT, body)
            return
        except (KubeError, KubeTransportError) as exc:
            if isinstance(exc, KubeError) and exc.namespace_terminating:
                # Expected while a namespace goes away: its objects are still reconciled.
                log.debug("no event %s on %s: %s", reason, meta["name"], exc)
                return
            # A lost connection or an overloaded apiserver passes; a refusal (403, 422) stays.
            transient = not isinstance(exc, KubeError) or exc.status == 429 or exc.status >= 500
            if not transient or attempt == attempts:
                log.warning("could not post event %s on %s: %s", reason, meta["name"], exc)
                return
        await asyncio.sleep(0.5 * 2**attempt)


class EventRecorder:
    """Posts events in the background, so a reconcile never waits for its own announcements."""

    def __init__(self, kube: Kube, max_in_flight: int = 2, max_hold_seconds: float = 10.0) -> None:
        self.kube = kube
        self._pending: set[asyncio.Task[None]] = set()
        # uid -> (generation, reason, message) already announced, so that retries and resyncs
        # of an unchanged object do not repeat themselves.
        self._reported: dict[str, set[tuple[int, str, str]]] = {}
        # Announcements yield to the work itself: only a few posts share the apiserver with it.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._open = asyncio.Event()
        self._open.set()
        self._max_hold = max_hold_seconds

    def hold(self) -> None:
        """Keep new posts back (a burst of more urgent writes is under way)."""
        self._open.clear()

    def release(self) -> None:
        """Post what was held back."""
        self._open.set()

    def emit(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Post one event soon (Normal or Warning)."""
        task = asyncio.create_task(self._post(involved, kind, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def emit_once(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> bool:
        """Post an event unless this object's generation already got the same one; True if new."""
        meta = involved["metadata"]
        mark = (int(meta.get("generation") or 0), reason, message)
        seen = self._reported.setdefault(str(meta.get("uid")), set())
        if mark in seen:
            return False
        seen.add(mark)
        self.emit(involved, kind, reason, message)
        return True

    def forget(self, uid: str) -> None:
        """The object is gone: forget what it was told."""
        self._reported.pop(uid, None)

    async def _post(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None:
        if not self._open.is_set():
            # Held for at most a while: a never-ending burst must not swallow the events.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._open.wait(), self._max_hold)
        async with self._slots:
            await post_event(self.kube, involved, kind, reason, message)

    async def drain(self) -> None:
        """Wait until every event emitted so far is posted."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
