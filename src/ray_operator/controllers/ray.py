"""kopf handlers for ``Ray``: feed watch events of Rays and their children to the reconciler."""

from __future__ import annotations

from typing import Any

import kopf

from ray_operator.api.constants import GROUP, LABEL_MANAGED_BY, MANAGED_BY, VERSION
from ray_operator.controllers.ray_reconciler import RayReconciler
from ray_operator.controllers.runtime import reconciler

_MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}


@kopf.on.event(GROUP, VERSION, "rays")
async def ray_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002 - kopf's name
    """A Ray was listed, added, changed or deleted."""
    reconciler(RayReconciler).on_ray_event(type, dict(body))


@kopf.on.event("apps", "v1", "deployments", labels=_MANAGED)
async def deployment_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """A child Deployment changed: status to report, or drift to repair."""
    reconciler(RayReconciler).on_child_event(type, dict(body))


@kopf.on.event("", "v1", "services", labels=_MANAGED)
async def service_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """A head Service changed or went away."""
    reconciler(RayReconciler).on_child_event(type, dict(body))
