"""kopf handlers for ``Ray``: feed watch events to the reconciler, resync on a timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from ray_operator.api.constants import GROUP, LABEL_MANAGED_BY, MANAGED_BY, VERSION
from ray_operator.controllers.ray_reconciler import RayReconciler
from ray_operator.kube import Kube
from ray_operator.settings import Settings

log = logging.getLogger(__name__)
_MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}


class _State:
    reconciler: RayReconciler | None = None
    resync_task: asyncio.Task[None] | None = None


def reconciler() -> RayReconciler:
    """The reconciler of this operator process (created at start-up)."""
    if _State.reconciler is None:
        raise RuntimeError("the Ray controller has not started")
    return _State.reconciler


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Connect the client, tune kopf, and start the periodic resync."""
    config = Settings.from_env()
    # Only silent watch handlers are used: kopf needs no annotations or finalizers on our objects.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    kube = await Kube.connect(config.kubeconfig)
    _State.reconciler = RayReconciler(kube, config)
    _State.resync_task = asyncio.create_task(
        _resync_forever(_State.reconciler, config.resync_seconds)
    )


async def _resync_forever(rec: RayReconciler, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        rec.resync()


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    """Stop the resync and close the client."""
    if _State.resync_task is not None:
        _State.resync_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _State.resync_task
    if _State.reconciler is not None:
        await _State.reconciler.queue.drain()
        await _State.reconciler.kube.close()


@kopf.on.event(GROUP, VERSION, "rays")
async def ray_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002 - kopf's name
    """A Ray was listed, added, changed or deleted."""
    reconciler().on_ray_event(type, dict(body))


@kopf.on.event("apps", "v1", "deployments", labels=_MANAGED)
async def deployment_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """A child Deployment changed: status to report, or drift to repair."""
    reconciler().on_child_event(type, dict(body))


@kopf.on.event("", "v1", "services", labels=_MANAGED)
async def service_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """A head Service changed or went away."""
    reconciler().on_child_event(type, dict(body))
