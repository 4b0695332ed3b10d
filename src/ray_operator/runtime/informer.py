"""Watch caches: list, then watch from the listed version, and list again when the watch breaks.

An :class:`Informer` keeps the objects of one kind that match its server-side selectors, in one
namespace, several, or all. After a 410 (the version it watched from was compacted away) or a
broken connection it lists again and *prunes*: objects that vanished in between are reported as
deleted, so their owners are reconciled and nothing is recreated for a deleted parent. ``synced``
is set once every namespace has been listed; no controller reconciles before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from ray_operator.kube import Kind, Kube, KubeError, KubeTransportError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
# (event type, object, previous version or None): ADDED, MODIFIED or DELETED.
Handler = Callable[[str, Obj, Obj | None], None]
# What is kept of each object (client-go's SetTransform): the parts the controllers read.
Transform = Callable[[Obj], Obj]

# How long a deleted object's uid is remembered, so that the answer to one of our own writes
# that arrives after the DELETED event does not put a dead object back into the cache.
TOMBSTONE_SECONDS = 300.0


def object_key(obj: Obj) -> Key:
    """(namespace, name) of an object."""
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def _version(obj: Obj) -> int:
    # Resource versions are opaque to clients, but etcd's are integers that only grow: comparing
    # them tells the answer to a write from an older watch event of the same object.
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class Informer:
    """One kind's watch cache, shared by every controller that reads that kind."""

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        namespaces: tuple[str, ...] = (),
        label_selector: str | None = None,
        on_restart: Callable[[str], None] | None = None,
        metadata_only: bool = False,
        transform: Transform | None = None,
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.transform = transform
        # Only the objects' metadata is listed and watched (a Secret's data never reaches us).
        self.metadata_only = metadata_only
        # Empty: every namespace (or a cluster-scoped kind) with one watch.
        self.namespaces: tuple[str | None, ...] = namespaces if kind.namespaced else ()
        self.label_selector = label_selector
        self.synced = asyncio.Event()
        # False from a broken watch until the next listing succeeds: readiness follows it.
        self.connected = False
        self.lists = 0
        self.watches = 0
        self._on_restart = on_restart
        self._store: dict[Key, Obj] = {}
        self._handlers: list[Handler] = []
        self._tombstones: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._listed: set[str | None] = set()

    @property
    def name(self) -> str:
        """The kind and selector, for logs and metrics."""
        return self.kind.kind + (f"[{self.label_selector}]" if self.label_selector else "")

    # --- reading ----------------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> Obj | None:
        """The cached object, or None."""
        return self._store.get((namespace, name))

    def items(self) -> Iterator[Obj]:
        """Every cached object (a snapshot: safe to iterate while the cache changes)."""
        return iter(list(self._store.values()))

    def __len__(self) -> int:
        return len(self._store)

    def subscribe(self, handler: Handler) -> None:
        """Call ``handler`` on every change (after the cache holds it)."""
        self._handlers.append(handler)

    # --- what our own writes return ---------------------------------------------------------
    def remember(self, obj: Obj) -> None:
        """Put the answer to our own write into the cache, unless the cache knows better."""
        obj = self.transform(obj) if self.transform else obj
        key = object_key(obj)
        if obj["metadata"].get("uid") in self._tombstones:
            return  # deleted meanwhile: its DELETED event came first
        current = self._store.get(key)
        if current is None or _version(obj) > _version(current):
            self._store[key] = obj

    def forget(self, obj: Obj) -> None:
        """Drop an object we deleted ourselves (its DELETED event will follow)."""
        key = object_key(obj)
        current = self._store.get(key)
        if current is not None and current["metadata"].get("uid") == obj["metadata"].get("uid"):
            del self._store[key]
            self._bury(current)

    # --- running ----------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """Listing and watching (an on-demand cache may not be yet)."""
        return bool(self._tasks)

    def start(self) -> None:
        """Begin listing and watching (one task per namespace); again: nothing."""
        if self._tasks:
            return
        for namespace in self.namespaces or (None,):
            self._tasks.append(asyncio.create_task(self._run(namespace)))

    async def stop(self) -> None:
        """Stop watching."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, namespace: str | None) -> None:
        delay = 0.5
        while True:
            try:
                version = await self._list(namespace)
                delay = 0.5
                while True:
                    version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                self.connected = False
                reason = "expired" if exc.status == 410 else f"{exc.status} {exc.reason}"
                self._restarted(namespace, reason, exc)
                if exc.status == 410:
                    continue  # list again at once: the version we watched from is gone
            except (KubeTransportError, OSError, ValueError) as exc:
                self.connected = False
                self._restarted(namespace, type(exc).__name__, exc)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, 30.0)

    def _restarted(self, namespace: str | None, reason: str, exc: BaseException) -> None:
        where = f" in {namespace}" if namespace else ""
        log.warning("watch of %s%s broke (%s): %s; listing again", self.name, where, reason, exc)
        if self._on_restart is not None:
            self._on_restart(self.kind.kind)

    async def _list(self, namespace: str | None) -> str:
        listing = await self.kube.list_all(
            self.kind, namespace, self.label_selector, metadata_only=self.metadata_only
        )
        self.lists += 1
        seen: set[Key] = set()
        changes: list[tuple[str, Obj, Obj | None]] = []
        for obj in listing.items:
            obj["kind"] = self.kind.kind  # PartialObjectMetadata names itself otherwise
            obj["apiVersion"] = self.kind.api_version
            obj = self.transform(obj) if self.transform else obj
            key = object_key(obj)
            seen.add(key)
            old = self._store.get(key)
            self._store[key] = obj
            if old is None:
                changes.append(("ADDED", obj, None))
            elif _version(old) != _version(obj):
                changes.append(("MODIFIED", obj, old))
        # Prune: what this namespace held before and the listing no longer has was deleted
        # while the watch was down.
        for key, old in list(self._store.items()):
            if key not in seen and (namespace is None or key[0] == namespace):
                del self._store[key]
                self._bury(old)
                changes.append(("DELETED", old, old))
        self._listed.add(namespace)
        if len(self._listed) == len(self.namespaces or (None,)):
            self.synced.set()
            self.connected = True
        for change in changes:
            self._notify(*change)
        return listing.resource_version

    async def _watch(self, namespace: str | None, version: str) -> str:
        """Follow changes from ``version`` until the server ends the watch; the last version."""
        # Spread the watches' ends like client-go does, so they do not all restart at once.
        timeout = int(300 * random.uniform(1.0, 2.0))  # noqa: S311
        self.watches += 1
        async for event_type, obj in self.kube.watch(
            self.kind,
            namespace,
            self.label_selector,
            resource_version=version,
            timeout_seconds=timeout,
            bookmarks=True,
            metadata_only=self.metadata_only,
        ):
            version = obj.get("metadata", {}).get("resourceVersion") or version
            if event_type == "BOOKMARK":
                continue
            obj["kind"] = self.kind.kind  # PartialObjectMetadata names itself otherwise
            obj["apiVersion"] = self.kind.api_version
            self._apply(event_type, self.transform(obj) if self.transform else obj)
        return version

    def _apply(self, event_type: str, obj: Obj) -> None:
        key = object_key(obj)
        old = self._store.get(key)
        if event_type == "DELETED":
            self._store.pop(key, None)
            self._bury(obj)
            self._notify("DELETED", obj, old)
            return
        if old is not None and old["metadata"].get("uid") != obj["metadata"].get("uid"):
            self._notify("DELETED", old, old)  # a namesake replaced it between two events
            old = None
        if old is not None and _version(old) >= _version(obj):
            return  # we already hold this version (the answer to our own write)
        self._store[key] = obj
        self._notify("ADDED" if old is None else "MODIFIED", obj, old)

    def _bury(self, obj: Obj) -> None:
        uid = obj["metadata"].get("uid")
        now = time.monotonic()
        if uid:
            self._tombstones[uid] = now
        if len(self._tombstones) > 1000:
            self._tombstones = {
                u: t for u, t in self._tombstones.items() if now - t < TOMBSTONE_SECONDS
            }

    def _notify(self, event_type: str, obj: Obj, old: Obj | None) -> None:
        for handler in self._handlers:
            try:
                handler(event_type, obj, old)
            except Exception:  # noqa: BLE001 - one handler's bug must not stop the watch
                log.exception("handler of %s failed on %s", self.name, object_key(obj))
