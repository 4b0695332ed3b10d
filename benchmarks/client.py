"""Client benchmark: the CPU one request costs the calling process, for the project's client
(``Kube``) and, in the same run, for a plain httpx client and a plain aiohttp session doing the
same creates against the same apiserver.

Why it exists: in a burst of 1,000 Rays most of the operator's CPU was its HTTP client's. The
plain clients are the baselines: httpx is what ``Kube`` used before, aiohttp what it uses now;
``Kube`` against plain aiohttp is what its own bookkeeping adds.

Each round creates ``--requests`` ConfigMaps of 2 KB, at most 8 in flight (``Kube``'s limit),
with each client in turn, so that the apiserver's state drifts the same for all; the figure is
the process's CPU time (``time.process_time``: the apiserver is another process) per request.
Prints the figures and writes benchmarks/results/client.json. Not a timed test. Needs the kube
binaries (scripts/build-kube.sh).

    .venv/bin/python benchmarks/client.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_file import RESULTS, write_results  # noqa: E402
from ray_operator.kube import CONFIGMAP, NAMESPACE, Kube  # noqa: E402
from ray_operator.localkube.control_plane import LocalControlPlane  # noqa: E402

IN_FLIGHT = 8
Create = Callable[[str, dict[str, Any]], Awaitable[None]]


def configmap(namespace: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"c{i}", "namespace": namespace},
        "data": {"k": "x" * 2000},
    }


async def timed(n: int, namespace: str, create: Create) -> tuple[float, float]:
    """(wall seconds, this process's CPU milliseconds per request) for n creates."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with slots:
            await create(namespace, configmap(namespace, i))

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.monotonic() - wall, 1000 * (time.process_time() - cpu) / n


async def with_kube(kube: Kube, n: int, namespace: str) -> tuple[float, float]:
    client = kube.sibling()
    try:

        async def create(ns: str, body: dict[str, Any]) -> None:
            await client.create(CONFIGMAP, body, ns)

        return await timed(n, namespace, create)
    finally:
        await client.close()


def plain_headers(token: str | None) -> dict[str, str]:
    headers = {"accept": "application/json", "content-type": "application/json"}
    if token:
        headers["authorization"] = token
    return headers


async def with_httpx(kube: Kube, n: int, namespace: str) -> tuple[float, float]:
    endpoint = kube.credentials.endpoint
    token = await kube.credentials.authorization()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(
        base_url=endpoint.server, verify=endpoint.ssl_context(), limits=limits
    ) as client:

        async def create(ns: str, body: dict[str, Any]) -> None:
            response = await client.post(
                f"/api/v1/namespaces/{ns}/configmaps",
                content=json.dumps(body).encode(),
                headers=plain_headers(token),
            )
            response.raise_for_status()
            response.json()

        return await timed(n, namespace, create)


async def with_aiohttp(kube: Kube, n: int, namespace: str) -> tuple[float, float]:
    endpoint = kube.credentials.endpoint
    token = await kube.credentials.authorization()
    connector = aiohttp.TCPConnector(limit=0, ssl=endpoint.ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:

        async def create(ns: str, body: dict[str, Any]) -> None:
            async with session.post(
                f"{endpoint.server}/api/v1/namespaces/{ns}/configmaps",
                data=json.dumps(body).encode(),
                headers=plain_headers(token),
            ) as response:
                response.raise_for_status()
                json.loads(await response.read())

        return await timed(n, namespace, create)


CLIENTS = {"kube": with_kube, "httpx": with_httpx, "aiohttp": with_aiohttp}


async def main(n: int, rounds: int) -> dict[str, object]:
    control_plane = LocalControlPlane()
    control_plane.start()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    try:
        kube = await Kube.connect(str(control_plane.kubeconfig))
        try:
            for r in range(rounds):
                for name, run in CLIENTS.items():
                    namespace = f"{name}-{r}"
                    await kube.create(NAMESPACE, {"metadata": {"name": namespace}})
                    runs[name].append(await run(kube, n, namespace))
                    wall, cpu = runs[name][-1]
                    print(f"round {r + 1} {name:8} {wall:6.2f} s  {cpu:.3f} ms CPU/request")
        finally:
            await kube.close()
    finally:
        control_plane.stop()
        shutil.rmtree(control_plane.workdir, ignore_errors=True)

    def figures(name: str) -> dict[str, object]:
        cpu = [c for _, c in runs[name]]
        wall = [w for w, _ in runs[name]]
        return {
            "cpu_ms_per_request_median": round(statistics.median(cpu), 3),
            "cpu_ms_per_request_range": [round(min(cpu), 3), round(max(cpu), 3)],
            "wall_s_median": round(statistics.median(wall), 2),
        }

    result: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_version()}",
        "requests_per_round": n,
        "rounds": rounds,
        "in_flight": IN_FLIGHT,
        "clients": {name: figures(name) for name in CLIENTS},
    }
    medians = {name: statistics.median(c for _, c in runs[name]) for name in CLIENTS}
    result["kube_vs_httpx_cpu"] = round(medians["kube"] / medians["httpx"], 2)
    result["kube_vs_aiohttp_cpu"] = round(medians["kube"] / medians["aiohttp"], 2)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(main(args.requests, args.rounds))
    print(json.dumps(result, indent=2))
    write_results(result, RESULTS / "client.json")
