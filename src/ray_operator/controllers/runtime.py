"""What every controller of one operator process shares: the settings, one client, one resync.

kopf calls :func:`start` once; it builds each controller's reconciler around the same
:class:`~ray_operator.kube.Kube` (kr8s hands out one connection pool per kubeconfig anyway, so
separate clients would only close each other's pool) and one periodic resync for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import kopf

from ray_operator.controllers.ray_reconciler import RayReconciler
from ray_operator.controllers.rayjob_reconciler import RayJobReconciler
from ray_operator.controllers.raypipeline_reconciler import PipelineReconciler
from ray_operator.controllers.workqueue import WorkQueue
from ray_operator.kube import Kube
from ray_operator.settings import Settings


class Reconciler(Protocol):
    """The part of a reconciler the runtime drives."""

    queue: WorkQueue

    def resync(self) -> None:
        """Reconcile every object it knows of."""

    async def close(self) -> None:
        """Cancel what it scheduled itself (timers)."""


R = TypeVar("R")


@dataclass
class Runtime:
    """The reconcilers of this process, keyed by their class."""

    kube: Kube
    settings: Settings
    reconcilers: dict[type, Reconciler] = field(default_factory=dict)
    resync_task: asyncio.Task[None] | None = None


class _Current:
    runtime: Runtime | None = None


def reconciler(kind: type[R]) -> R:
    """The reconciler of ``kind`` in this operator process (created at start-up)."""
    runtime = _Current.runtime
    if runtime is None or kind not in runtime.reconcilers:
        raise RuntimeError(f"the operator has not started {kind.__name__}")
    found: Any = runtime.reconcilers[kind]
    return found  # type: ignore[no-any-return]


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base, never built: only ``on.event`` handlers run, and they read no diff.

    kopf builds one per watch event all the same, a deep copy of the whole object, which was
    a tenth of the operator's CPU while it created clusters in a burst.
    """

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[kopf.FieldSpec] | None = None,
    ) -> kopf.BodyEssence:
        """An empty essence: nothing to compare."""
        return kopf.BodyEssence()


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Read the settings, tune kopf, connect, build the reconcilers, start the resync."""
    config = Settings.from_env()
    # Only silent watch handlers are used: kopf needs no annotations or finalizers of its own.
    settings.posting.enabled = False
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    kube = await Kube.connect(config.kubeconfig)
    runtime = Runtime(kube, config)
    for kind in (RayReconciler, RayJobReconciler, PipelineReconciler):
        runtime.reconcilers[kind] = kind(kube, config)
    runtime.resync_task = asyncio.create_task(_resync_forever(runtime, config.resync_seconds))
    _Current.runtime = runtime


async def _resync_forever(runtime: Runtime, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for rec in runtime.reconcilers.values():
            rec.resync()


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    """Stop the resync, let running reconciles finish, close the client."""
    runtime = _Current.runtime
    if runtime is None:
        return
    if runtime.resync_task is not None:
        runtime.resync_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runtime.resync_task
    for rec in runtime.reconcilers.values():
        await rec.close()
        await rec.queue.drain()
    await runtime.kube.close()
    _Current.runtime = None
