"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it.

Every replica keeps its caches warm; only the holder of the Lease reconciles. The holder renews
the Lease every ``retry_period``; a standby takes it over once it has seen no renewal for
``lease_duration`` (measured on its own clock, so clock skew between nodes does not matter). A
leader that cannot renew within ``renew_deadline`` stops leading: the process then exits, as
controller-runtime's managers do, rather than risk two leaders writing the same objects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ray_operator.kube import LEASE, Kube, KubeError, KubeTransportError

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElector:
    """Acquires and keeps one Lease; ``leading`` is set while this process holds it."""

    kube: Kube
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    on_change: Callable[[bool], None] | None = None
    leading: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    # What we last saw of the record, and when on our clock: the lease runs from that moment.
    _observed: tuple[str, str] | None = None
    _observed_at: float = 0.0

    async def run(self) -> None:
        """Acquire, renew while possible, and after a loss try to acquire again; forever."""
        while True:
            while not await self._try():
                await asyncio.sleep(self.retry_period)
            self.lost.clear()
            self._set(True)
            log.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, self.name)
            last_renewal = time.monotonic()
            while time.monotonic() - last_renewal <= self.renew_deadline:
                await asyncio.sleep(self.retry_period)
                if await self._try():
                    last_renewal = time.monotonic()
            log.error(
                "lost the Lease %s/%s: not renewed for %.0fs; standing by",
                self.namespace,
                self.name,
                self.renew_deadline,
            )
            self._set(False)
            self.lost.set()

    def _set(self, leading: bool) -> None:
        if leading:
            self.leading.set()
        else:
            self.leading.clear()
        if self.on_change is not None:
            self.on_change(leading)

    async def _try(self) -> bool:
        """One attempt to acquire or renew; True when this process holds the Lease after it."""
        try:
            lease = await self.kube.get_or_none(LEASE, self.name, self.namespace)
            now = _micro_time()
            if lease is None:
                await self.kube.create(LEASE, self._record(None, now), self.namespace)
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            seen = (holder, str(spec.get("renewTime") or ""))
            if seen != self._observed:
                self._observed, self._observed_at = seen, time.monotonic()
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            expired = time.monotonic() - self._observed_at > duration
            if holder and holder != self.identity and not expired:
                return False
            updated = {**lease, "spec": self._spec(spec, holder, now)}
            await self.kube.replace(LEASE, updated)
            return True
        except (KubeError, KubeTransportError, OSError) as exc:
            # A conflict is another replica winning the race; anything else is retried too.
            log.debug("lease attempt failed: %s", exc)
            return False

    def _spec(self, current: Obj, holder: str, now: str) -> Obj:
        spec = {
            **current,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "renewTime": now,
        }
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + (
                1 if holder else 0
            )
        return spec

    def _record(self, current: Obj | None, now: str) -> Obj:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(current or {}, "", now),
        }

    async def release(self) -> None:
        """Give the Lease up at a clean shutdown, so a standby takes over at once."""
        if not self.leading.is_set():
            return
        try:
            lease = await self.kube.get(LEASE, self.name, self.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
            await self.kube.replace(LEASE, {**lease, "spec": spec})
        except (KubeError, KubeTransportError, OSError) as exc:
            log.warning("could not release the Lease %s/%s: %s", self.namespace, self.name, exc)
        self._set(False)
