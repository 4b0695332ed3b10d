"""Install CustomResourceDefinitions and wait until the apiserver serves them."""

from __future__ import annotations

import asyncio

from ray_operator.kube import CRD, Kube, Obj


async def install_crds(kube: Kube, crds: list[Obj], timeout: float = 30.0) -> None:
    """Create or replace each CRD, then wait for all of them to be Established."""
    for crd in crds:
        await kube.apply_manifest(crd)
    deadline = asyncio.get_running_loop().time() + timeout
    for crd in crds:
        name = crd["metadata"]["name"]
        while True:
            current = await kube.get(CRD, name)
            conditions = (current.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout}s")
            await asyncio.sleep(0.1)
