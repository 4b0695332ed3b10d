"""Operator settings, read once at start-up from ``RAY_OPERATOR_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ray_operator.api.constants import DEFAULT_RAY_IMAGE


@dataclass(frozen=True)
class Settings:
    """Everything the operator can be told at start-up; nothing else reads the environment."""

    ray_image: str = DEFAULT_RAY_IMAGE
    resync_seconds: float = 60.0
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    kubeconfig: str | None = None
    runner_image: str = "ray-operator:latest"

    @property
    def cluster_wide(self) -> bool:
        """True when no namespace list was given: the operator watches every namespace."""
        return not self.namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        namespaces = tuple(
            ns.strip() for ns in env.get("RAY_OPERATOR_NAMESPACES", "").split(",") if ns.strip()
        )
        resync = env.get("RAY_OPERATOR_RESYNC_SECONDS", "60")
        try:
            resync_seconds = float(resync)
        except ValueError:
            raise ValueError(
                f"RAY_OPERATOR_RESYNC_SECONDS={resync!r} is not a number of seconds"
            ) from None
        if resync_seconds <= 0:
            raise ValueError(f"RAY_OPERATOR_RESYNC_SECONDS={resync!r} must be greater than 0")
        return cls(
            ray_image=env.get("RAY_OPERATOR_RAY_IMAGE", DEFAULT_RAY_IMAGE),
            resync_seconds=resync_seconds,
            namespaces=namespaces,
            kubeconfig=env.get("KUBECONFIG") or None,
            runner_image=env.get("RAY_OPERATOR_RUNNER_IMAGE", "ray-operator:latest"),
        )
