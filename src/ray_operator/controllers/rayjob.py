"""kopf handlers for ``RayJob``: feed watch events to the reconciler.

Children are watched through the label every one of them carries (``ray.kubeflow.org/rayjob``),
so the runner's status reaches the resource as soon as it writes its ConfigMap.
"""

from __future__ import annotations

from typing import Any

import kopf

from ray_operator.api.constants import GROUP, VERSION
from ray_operator.builders.rayjob import LABEL_RAYJOB
from ray_operator.controllers.rayjob_reconciler import RayJobReconciler
from ray_operator.controllers.runtime import reconciler

_OWNED = {LABEL_RAYJOB: kopf.PRESENT}


@kopf.on.event(GROUP, VERSION, "rayjobs")
async def rayjob_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002 - kopf's name
    """A RayJob was listed, added, changed or deleted."""
    reconciler(RayJobReconciler).on_job_event(type, dict(body))


@kopf.on.event(GROUP, VERSION, "rays")
async def ray_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """A Ray's health changed: RayJobs that name it may start."""
    reconciler(RayJobReconciler).on_ray_event(type, dict(body))


@kopf.on.event("", "v1", "configmaps", labels=_OWNED)
async def configmap_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner wrote status, or the ConfigMap went away."""
    reconciler(RayJobReconciler).on_child_event(type, dict(body))


@kopf.on.event("", "v1", "pods", labels=_OWNED)
async def pod_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner Pod changed phase or went away."""
    reconciler(RayJobReconciler).on_child_event(type, dict(body))


@kopf.on.event("", "v1", "serviceaccounts", labels=_OWNED)
async def service_account_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner's ServiceAccount changed or went away."""
    reconciler(RayJobReconciler).on_child_event(type, dict(body))


@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=_OWNED)
async def role_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner's Role changed or went away."""
    reconciler(RayJobReconciler).on_child_event(type, dict(body))


@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=_OWNED)
async def role_binding_event(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
    """The runner's RoleBinding changed or went away."""
    reconciler(RayJobReconciler).on_child_event(type, dict(body))
