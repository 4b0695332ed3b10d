"""Does a child as it is still hold what we want of it? And what to write when it does not.

The comparison is apimachinery's ``Semantic.DeepDerivative`` in spirit: every field we set must
be there with the same value; fields we do not set (the apiserver's defaults, a label someone
added) are not drift. Values are compared as the apiserver normalizes them (``1000m`` is ``1``),
absent equals empty or zero (the apiserver drops empty fields), and lists whose items have a
merge key (``name``, a port, a mount path) match item by item, so an item someone added is kept.
No hash of what was built is stored: what is compared is the child as it stands, so a hand edit
made while the operator was down is found at its next start.
"""

from __future__ import annotations

import copy
from typing import Any

from ray_operator.api.quantity import quantity

Obj = dict[str, Any]

# Keys that identify an item of a list, tried in order (the associative lists of the API; a
# volume may be mounted twice, so mounts go by path before name).
_MERGE_KEYS = (
    ("uid",),
    ("mountPath",),
    ("devicePath",),
    ("name",),
    ("containerPort", "protocol"),
    ("port", "protocol"),
    ("ip",),
    ("conditionType",),
)
_DEFAULTS = {"protocol": "TCP"}


def differences(desired: Any, existing: Any, path: str = "") -> list[str]:
    """Paths where ``existing`` lacks or contradicts what ``desired`` says (empty: none)."""
    found: list[str] = []
    _compare(desired, existing, path, found)
    return found


def _unset(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def _compare(desired: Any, existing: Any, path: str, found: list[str]) -> None:
    if isinstance(desired, dict):
        if not isinstance(existing, dict):
            found.append(path or ".")
            return
        for key, want in desired.items():
            if _unset(want):
                continue
            where = f"{path}.{key}" if path else key
            if key not in existing:
                if want is not False and want != 0:  # absent: the zero value
                    found.append(where)
                continue
            _compare(want, existing[key], where, found)
    elif isinstance(desired, list):
        if not isinstance(existing, list):
            found.append(path)
            return
        keys = _merge_key(desired)
        if keys is None:
            if len(desired) != len(existing):
                found.append(path)
                return
            for i, (want, have) in enumerate(zip(desired, existing, strict=True)):
                _compare(want, have, f"{path}[{i}]", found)
            return
        by_key = {_identity(item, keys): item for item in existing if isinstance(item, dict)}
        for want in desired:
            ident = _identity(want, keys)
            where = f"{path}[{'='.join(str(v) for v in ident)}]"
            if ident not in by_key:
                found.append(where)
            else:
                _compare(want, by_key[ident], where, found)
    elif not _same_scalar(desired, existing):
        found.append(path)


def _merge_key(items: list[Any]) -> tuple[str, ...] | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for keys in _MERGE_KEYS:
        if all(keys[0] in item for item in items):
            return keys
    return None


def _identity(item: Obj, keys: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(item.get(k, _DEFAULTS.get(k)) for k in keys)


def _same_scalar(a: Any, b: Any) -> bool:
    if a == b and type(a) is type(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    qa, qb = quantity(a), quantity(b)
    return qa is not None and qa == qb


def controller_uid(obj: Obj) -> str | None:
    """The uid of the object's controller (its owner reference with ``controller: true``)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


def controller_name(obj: Obj) -> str:
    """``Kind/name`` of the object's controller, or ``nobody``."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref.get('kind')}/{ref.get('name')}"
    return "nobody"


# Service fields the apiserver assigns once and refuses to change: a replacement keeps them.
_SERVICE_ASSIGNED = (
    "clusterIP",
    "clusterIPs",
    "ipFamilies",
    "ipFamilyPolicy",
    "healthCheckNodePort",
)


def replacement(existing: Obj, desired: Obj) -> Obj:
    """The object to PUT: our spec, on the existing metadata with our labels and reference.

    Labels, annotations, finalizers and owner references that others put on the child stay;
    ours are set. The spec is ours whole (a hand edit of it is what gets repaired), except the
    fields of a Service the apiserver assigned.
    """
    have = existing["metadata"]
    want = desired["metadata"]
    meta = {
        k: copy.deepcopy(v)
        for k, v in have.items()
        if k not in ("managedFields", "creationTimestamp", "generation")
    }
    meta["labels"] = {**(have.get("labels") or {}), **(want.get("labels") or {})}
    annotations = {**(have.get("annotations") or {}), **(want.get("annotations") or {})}
    if annotations:
        meta["annotations"] = annotations
    ours = {ref["uid"] for ref in want.get("ownerReferences") or []}
    meta["ownerReferences"] = [
        *(r for r in have.get("ownerReferences") or [] if r.get("uid") not in ours),
        *copy.deepcopy(want.get("ownerReferences") or []),
    ]
    body = {**copy.deepcopy(desired), "metadata": meta}
    if desired["kind"] == "Service":
        spec = body["spec"]
        for field in _SERVICE_ASSIGNED:
            if field in existing.get("spec", {}) and field not in spec:
                spec[field] = existing["spec"][field]
    return body
