"""The defaults a cluster was given, recorded on its ``Ray`` so that upgrades never restart it.

When a ``Ray`` leaves out a head or worker template, the operator fills in a default one. That
default is resolved once, when the cluster first needs it, and written to the annotation
``ray.kubeflow.org/defaults`` (JSON: the builder revision and each default template) of the
head Deployment as it is created, and of the ``Ray`` once that exists (so that a burst of new
clusters spends its requests on their children first). From then on the children are built
from the recorded templates, not from what the running operator would choose today: a new
operator version, another ``RAY_OPERATOR_RAY_IMAGE`` or changed default templates reach an
existing cluster only when its user asks, by setting the annotation to ``current``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Final

from ray_operator.api.constants import ANNOTATION_DEFAULTS, ROLE_HEAD, ROLE_WORKER
from ray_operator.builders.default_templates import (
    default_head_template_v1,
    default_head_template_v2,
    default_worker_template_v1,
    default_worker_template_v2,
)

Obj = dict[str, Any]

# The builder revision new clusters get. Raise it (and keep the old branches) whenever what the
# builders make of the same spec changes.
CURRENT_REVISION: Final = 4
# From this revision on, every worker waits for the head's GCS (builders.gcs_wait).
WAIT_FOR_GCS_FROM: Final = 3
# From this revision on, an autoscaled group's new workers wait for the operator to let them be
# scheduled (builders.autoscaling.gated_worker_template).
GATE_AUTOSCALED_WORKERS_FROM: Final = 4
# The value a user writes to the annotation to move a cluster to today's defaults.
USE_CURRENT: Final = "current"
ROLES: Final = (ROLE_HEAD, ROLE_WORKER)


class DefaultsError(ValueError):
    """The annotation holds something the operator cannot read."""


@dataclass(frozen=True)
class Defaults:
    """A builder revision and the default template of each role that uses one."""

    revision: int
    templates: dict[str, Obj]

    def template(self, role: str) -> Obj | None:
        """The recorded default template of ``role`` (a copy), if any."""
        found = self.templates.get(role)
        return copy.deepcopy(found) if found is not None else None

    def with_templates(self, extra: dict[str, Obj]) -> Defaults:
        """These defaults plus templates for roles that had none recorded."""
        return Defaults(self.revision, {**extra, **self.templates})

    def annotation(self) -> str:
        """The annotation's value: compact, stable JSON."""
        return json.dumps(
            {"revision": self.revision, **self.templates}, sort_keys=True, separators=(",", ":")
        )


def builtin_templates(revision: int, ray_image: str) -> dict[str, Obj]:
    """The default templates of a builder revision, for an image."""
    if revision == 1:
        return {
            ROLE_HEAD: default_head_template_v1(ray_image),
            ROLE_WORKER: default_worker_template_v1(ray_image),
        }
    if revision in (2, 3, 4):  # 3 and 4 changed what is built around the templates only
        return {
            ROLE_HEAD: default_head_template_v2(ray_image),
            ROLE_WORKER: default_worker_template_v2(ray_image),
        }
    raise DefaultsError(f"builder revision {revision} is unknown to this operator")


def current_defaults(ray_image: str, templates: dict[str, Obj] | None = None) -> Defaults:
    """What a new cluster gets today: the operator's own templates, or the configured ones."""
    chosen = templates or builtin_templates(CURRENT_REVISION, ray_image)
    return Defaults(CURRENT_REVISION, copy.deepcopy(chosen))


def read_defaults(ray: Obj) -> Defaults | None:
    """The defaults recorded on a ``Ray``; None when none are (or ``current`` is asked for).

    Raises :class:`DefaultsError` naming the annotation when its value cannot be read.
    """
    annotations = (ray.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(ANNOTATION_DEFAULTS)
    if text is None or text.strip() == USE_CURRENT:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DefaultsError(
            f"metadata.annotations[{ANNOTATION_DEFAULTS!r}]: not JSON ({exc}); remove it or set "
            f"it to {USE_CURRENT!r} to take the operator's current defaults"
        ) from None
    revision = data.get("revision") if isinstance(data, dict) else None
    if not isinstance(revision, int) or revision < 1 or revision > CURRENT_REVISION:
        raise DefaultsError(
            f"metadata.annotations[{ANNOTATION_DEFAULTS!r}]: revision {revision!r} is not one "
            f"of 1 to {CURRENT_REVISION}; set it to {USE_CURRENT!r} to take the current defaults"
        )
    templates = {role: data[role] for role in ROLES if isinstance(data.get(role), dict)}
    return Defaults(revision, templates)


def asks_for_current(ray: Obj) -> bool:
    """The user set the annotation to ``current``."""
    annotations = (ray.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_DEFAULTS, "")).strip() == USE_CURRENT


def legacy_defaults(images: dict[str, str], fallback_image: str) -> Defaults:
    """The defaults of a cluster made before they were recorded (revision 1).

    ``images`` holds the image each existing child Deployment runs, by role: the first release
    took the default image from its settings at creation, so the child is the one witness of it.
    """
    head = default_head_template_v1(images.get(ROLE_HEAD) or fallback_image)
    worker = default_worker_template_v1(images.get(ROLE_WORKER) or fallback_image)
    return Defaults(1, {ROLE_HEAD: head, ROLE_WORKER: worker})
