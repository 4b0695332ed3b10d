"""Requests as the apiserver's audit log saw them: who (user agent) did what to which object."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class Request:
    """One request, as received."""

    verb: str
    resource: str  # with its subresource: "rays/status"
    namespace: str
    name: str
    user_agent: str
    code: int = 0  # the answer's HTTP status (ResponseComplete only)

    @property
    def write(self) -> bool:
        """It changes something."""
        return self.verb in WRITES


def requests(path: Path, start: int = 0, stage: str = "RequestReceived") -> list[Request]:
    """Every request after byte ``start`` of the audit log, as logged at ``stage``.

    ``ResponseComplete`` names the object a create made (its request only names the collection).
    """
    found: list[Request] = []
    if not path.exists():
        return found
    with path.open("rb") as f:
        f.seek(start)
        data = f.read()
    for line in data.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written as we read
        if event.get("stage") != stage:
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", event.get("requestURI", "?"))
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        found.append(
            Request(
                verb=str(event.get("verb")),
                resource=resource,
                namespace=str(ref.get("namespace", "")),
                name=str(ref.get("name", "")),
                user_agent=str(event.get("userAgent", "")),
                code=int((event.get("responseStatus") or {}).get("code") or 0),
            )
        )
    return found


def by_agent(found: list[Request], agent: str) -> list[Request]:
    """The requests of one client (its user agent contains ``agent``)."""
    return [r for r in found if agent in r.user_agent]


def verbs(found: list[Request]) -> Counter[str]:
    """``verb resource`` counts."""
    return Counter(f"{r.verb} {r.resource}" for r in found)
