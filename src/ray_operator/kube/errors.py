"""The apiserver's refusals, as one exception type with the parts callers decide on."""

from __future__ import annotations

import httpx


class KubeError(RuntimeError):
    """The apiserver refused a request; ``status`` is the HTTP code, ``reason`` its reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        """The object does not exist."""
        return self.status == 404

    @property
    def namespace_terminating(self) -> bool:
        """Refused because the namespace is being deleted (nothing new can be created there)."""
        return self.status == 403 and "being terminated" in self.message

    @property
    def conflict(self) -> bool:
        """Already exists, or written by someone else since it was read."""
        return self.status == 409


def kube_error_from(response: httpx.Response | None, text: str) -> KubeError:
    """The refusal an error response stands for (its Status object when it has one)."""
    if response is None:
        return KubeError(0, "Unknown", text)
    try:
        status = response.json()
        return KubeError(
            response.status_code, status.get("reason", ""), status.get("message", text)
        )
    except (ValueError, AttributeError):
        return KubeError(response.status_code, "", response.text or text)
