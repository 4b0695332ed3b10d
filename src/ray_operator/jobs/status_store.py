"""The job's ConfigMap as the runner's memory: its settings in, the job's status out."""

from __future__ import annotations

import secrets
from typing import Protocol

from ray_operator.api.jobdata import KEY_ID
from ray_operator.kube import CONFIGMAP, Kube, KubeError


class StatusStore(Protocol):
    """Where a runner reads its job and writes status; the ConfigMap in a cluster."""

    async def read(self) -> dict[str, str]:
        """The current data."""
        ...

    async def write(self, values: dict[str, str]) -> None:
        """Store the keys whose values changed (nothing when none did)."""
        ...

    async def claim_id(self, submission_id: str) -> str:
        """Store ``submission_id`` unless an id is already stored; return the stored one."""
        ...


def new_submission_id(job_name: str) -> str:
    """A fresh Ray submission id, readable in `ray job list`."""
    return f"{job_name}-{secrets.token_hex(4)}"


class ConfigMapStore:
    """One ConfigMap, read and patched through the project's Kube client."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self._data: dict[str, str] = {}
        self._version = ""

    async def read(self) -> dict[str, str]:
        """Read the ConfigMap's data."""
        obj = await self.kube.get(CONFIGMAP, self.name, self.namespace)
        self._data = dict(obj.get("data") or {})
        self._version = obj["metadata"]["resourceVersion"]
        return dict(self._data)

    async def write(self, values: dict[str, str]) -> None:
        """Patch only the keys whose values differ from the last read or write."""
        changed = {k: v for k, v in values.items() if self._data.get(k) != v}
        if not changed:
            return
        obj = await self.kube.patch(CONFIGMAP, self.name, {"data": changed}, self.namespace)
        self._data = dict(obj.get("data") or {})
        self._version = obj["metadata"]["resourceVersion"]

    async def claim_id(self, submission_id: str) -> str:
        """Compare-and-set on the resourceVersion: two runners never keep two ids."""
        while True:
            if not self._version:
                await self.read()
            if self._data.get(KEY_ID):
                return self._data[KEY_ID]
            patch = {
                "metadata": {"resourceVersion": self._version},
                "data": {KEY_ID: submission_id},
            }
            try:
                obj = await self.kube.patch(CONFIGMAP, self.name, patch, self.namespace)
            except KubeError as exc:
                if not exc.conflict:
                    raise
                await self.read()
                continue
            self._data = dict(obj.get("data") or {})
            self._version = obj["metadata"]["resourceVersion"]
            return submission_id


class MemoryStore:
    """A store in memory: for the CLI and benchmarks that run a job without a ConfigMap."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = dict(data)
        self.writes = 0

    async def read(self) -> dict[str, str]:
        """The current data."""
        return dict(self.data)

    async def write(self, values: dict[str, str]) -> None:
        """Keep the changed keys."""
        changed = {k: v for k, v in values.items() if self.data.get(k) != v}
        if changed:
            self.writes += 1
            self.data.update(changed)

    async def claim_id(self, submission_id: str) -> str:
        """Keep the first id."""
        return self.data.setdefault(KEY_ID, submission_id)
