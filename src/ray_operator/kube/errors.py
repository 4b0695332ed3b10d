"""The apiserver's answers and silences as exceptions.

A refusal is one type with the parts callers decide on; no answer at all is another.
"""

from __future__ import annotations

import json


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


class KubeTransportError(ConnectionError):
    """No answer from the apiserver: the connection was refused, broke or timed out."""


def kube_error_from(status: int, body: bytes, text: str) -> KubeError:
    """The refusal an error response stands for (its Status object when it has one)."""
    try:
        answer = json.loads(body)
        return KubeError(status, answer.get("reason", ""), answer.get("message", text))
    except (ValueError, AttributeError):
        return KubeError(status, "", body.decode(errors="replace") or text)
