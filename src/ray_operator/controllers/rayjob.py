"""kopf handlers for ``RayJob``: feed watch events to the reconciler, resync on a timer.

Children are watched through the label every one of them carries (``ray.kubeflow.org/rayjob``),
so the runner's status reaches the resource as soon as it writes its ConfigMap.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from ray_operator.api.constants import GROUP, VERSION
from ray_operator.builders.rayjob import LABEL_RAYJOB
from ray_operator.controllers.rayjob_reconciler import RayJobReconciler
from ray_operator.kube import Kube
from ray_operator.settings import Settings

_OWNED = {LABEL_RAYJOB: kopf.PRESENT}


class _State:
    reconciler: RayJobReconciler | None = None
    resync_task: asyncio.Task[None] | None = None


def reconciler() -> RayJobReconciler:
    """The RayJob reconciler of this operator process (created at start-up)."""
    if _State.reconciler is None:
        raise RuntimeError("the RayJob controller has not started")
    return _State.reconciler


@kopf.on.startup()
async def start(**_: Any) -> None:
    """Connect a client and start the periodic resync (kopf itself is tuned in controllers.ray)."""
    config = Settings.from_env()
    kube = await Kube.connect(config.kubeconfig)
    _State.reconciler = RayJobReconciler(kube, config)
    _State.resync_task = asyncio.create_task(
        _resync_forever(_State.reconciler, config.resync_seconds)
    )


async def _resync_forever(rec: RayJobReconciler, every: float) -> None:
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


@kopf.on.event(GROUP, VERSION, "rayjobs")
async def rayjob_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002 - kopf's name
    """A RayJob was listed, added, changed or deleted."""
    reconciler().on_job_event(type, dict(body))


@kopf.on.event(GROUP, VERSION, "rays")
async def ray_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """A Ray's health changed: RayJobs that name it may start."""
    reconciler().on_ray_event(type, dict(body))


@kopf.on.event("", "v1", "configmaps", labels=_OWNED)
async def configmap_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner wrote status, or the ConfigMap went away."""
    reconciler().on_child_event(type, dict(body))


@kopf.on.event("", "v1", "pods", labels=_OWNED)
async def pod_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner Pod changed phase or went away."""
    reconciler().on_child_event(type, dict(body))


@kopf.on.event("", "v1", "serviceaccounts", labels=_OWNED)
async def service_account_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner's ServiceAccount changed or went away."""
    reconciler().on_child_event(type, dict(body))


@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=_OWNED)
async def role_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner's Role changed or went away."""
    reconciler().on_child_event(type, dict(body))


@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=_OWNED)
async def role_binding_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner's RoleBinding changed or went away."""
    reconciler().on_child_event(type, dict(body))
