"""What a container would see in a pod: its environment and its expanded command line."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

Obj = dict[str, Any]
# Reads a ConfigMap's or Secret's data (Secrets decoded): (kind, name) -> data, or None if absent.
Lookup = Callable[[str, str], Mapping[str, str] | None]

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: unknown references stay as written, ``$$`` is ``$``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REF.sub(sub, text)


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1``) as a number."""
    text = str(value)
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text)
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def _resource_field(pod: Obj, ref: Obj) -> str:
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    container = containers.get(ref.get("containerName", ""), pod["spec"]["containers"][0])
    kind, _, resource = ref["resource"].partition(".")
    amount = container.get("resources", {}).get(kind, {}).get(resource)
    divisor = quantity(ref.get("divisor", "1"))
    if amount is None:
        # No limit: the kubelet reports the node's allocatable amount.
        if resource == "cpu":
            return str(os.cpu_count() or 1)
        return str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return str(math.ceil(quantity(amount) / divisor))


def _field(pod: Obj, path: str, pod_ip: str) -> str:
    meta = pod["metadata"]
    simple = {
        "status.podIP": pod_ip,
        "status.hostIP": pod_ip,
        "metadata.name": meta["name"],
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": "localhost",
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ValueError(f"fieldRef {path!r} is not supported by the local pod runner")


def container_env(pod: Obj, container: Obj, pod_ip: str, lookup: Lookup) -> dict[str, str]:
    """The environment variables the container gets (envFrom first, then env, in order)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                for name, value in (lookup(kind, source[key]["name"]) or {}).items():
                    env[prefix + name] = value
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = expand(str(item["value"]), env)
            continue
        source = item.get("valueFrom", {})
        if "fieldRef" in source:
            env[name] = _field(pod, source["fieldRef"]["fieldPath"], pod_ip)
        elif "resourceFieldRef" in source:
            env[name] = _resource_field(pod, source["resourceFieldRef"])
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            kind, ref = (
                ("ConfigMap", source["configMapKeyRef"])
                if "configMapKeyRef" in source
                else ("Secret", source["secretKeyRef"])
            )
            found = (lookup(kind, ref["name"]) or {}).get(ref["key"])
            if found is None and not ref.get("optional"):
                raise ValueError(f"env {name}: {kind} {ref['name']} has no key {ref['key']!r}")
            if found is not None:
                env[name] = found
        else:
            env[name] = ""
    return env


def container_argv(container: Obj, env: Mapping[str, str]) -> list[str]:
    """Command + args with ``$(VAR)`` expanded, as the kubelet would start them."""
    command = container.get("command")
    if not command:
        raise ValueError(
            f"container {container['name']!r} has no command: the local pod runner cannot use an "
            "image's entrypoint"
        )
    return [expand(part, env) for part in [*command, *container.get("args", [])]]


def run_as(pod: Obj, container: Obj) -> tuple[int | None, int | None]:
    """The user and group a container runs as: its securityContext over the pod's."""
    pod_ctx = pod["spec"].get("securityContext") or {}
    own = container.get("securityContext") or {}
    user = own.get("runAsUser", pod_ctx.get("runAsUser"))
    group = own.get("runAsGroup", pod_ctx.get("runAsGroup"))
    return user, group


def non_root_problem(pod: Obj, container: Obj) -> str | None:
    """Why a kubelet would refuse to start the container under ``runAsNonRoot``, if it would.

    A kubelet checks the image's ``USER``: with ``runAsNonRoot`` and no ``runAsUser`` it starts
    the container only when that user is numeric and not 0. This stand-in runs no images, so it
    takes the images for what the Ray images are (``USER ray``, a name) and refuses them the
    same way: a template must name its numeric user.
    """
    pod_ctx = pod["spec"].get("securityContext") or {}
    own = container.get("securityContext") or {}
    non_root = own.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
    user, _ = run_as(pod, container)
    if not non_root:
        return None
    if user is None:
        return (
            f"container has runAsNonRoot and image has non-numeric user, cannot verify user "
            f"is non-root (pod: {pod['metadata']['name']}, container: {container['name']})"
        )
    if user == 0:
        return "container's runAsUser breaks non-root policy"
    return None
