"""The demo: a local control plane, the operator, a Ray cluster from the simple example, a job.

Run ``scripts/demo.sh`` (it builds what is missing first), or ``python -m
ray_operator.localkube.demo`` once the Kubernetes binaries are built. Needs root: each local pod
gets a network namespace of its own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from ray_operator.api.crd import all_crds
from ray_operator.kube import POD, RAY, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.crds import install_crds
from ray_operator.localkube.pod_runner import PodRunner

ROOT = Path(__file__).resolve().parents[3]
NAMESPACE = "default"


def say(text: str) -> None:
    """One step of the story, on its own line."""
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cp: LocalControlPlane, *args: str) -> None:
    """Run the project's kubectl and print what it prints."""
    print(f"$ kubectl {' '.join(args)}", flush=True)
    result = cp.run_kubectl(*args, check=False)
    print(result.stdout + result.stderr, end="", flush=True)


async def wait_healthy(kube: Kube, name: str, timeout: float) -> None:
    """Print the head/worker readiness as it changes until Health=True."""
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout:
        status = (await kube.get(RAY, name, NAMESPACE)).get("status") or {}
        line = (
            f"head {status.get('headReady', '-')}, workers {status.get('workersReady', '-')}, "
            f"Health={status.get('health', '-')}"
        )
        if line != last:
            print(f"   [{time.monotonic() - start:5.1f}s] {line}", flush=True)
            last = line
        if status.get("health") == "True":
            return
        await asyncio.sleep(1)
    raise TimeoutError(f"Ray {name} was not healthy after {timeout:.0f}s")


async def main() -> int:
    """Run the whole demo; returns the job's exit code."""
    say("Starting a local Kubernetes control plane (etcd, kube-apiserver, controller-manager)")
    cp = LocalControlPlane().start()
    operator: subprocess.Popen[bytes] | None = None
    runner: PodRunner | None = None
    kube = await Kube.connect(str(cp.kubeconfig))
    try:
        print(f"   apiserver {cp.server}; logs in {cp.workdir}")
        await install_crds(kube, all_crds())
        show(cp, "get", "crds")

        say("Starting the operator (ray-operator run)")
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
        log = (cp.workdir / "operator.log").open("wb")
        operator = subprocess.Popen(
            [sys.executable, "-m", "ray_operator", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        print(f"   operator log: {cp.workdir / 'operator.log'}")

        say(
            "Starting the local pod runner (stands in for a kubelet: pods run as processes, "
            "one network namespace each)"
        )
        runner = await PodRunner(kube, namespace=NAMESPACE, run_containers=True).start()

        say("Applying examples/ray-simple.yaml: a Ray with 3 workers")
        print((ROOT / "examples" / "ray-simple.yaml").read_text())
        show(cp, "apply", "-f", str(ROOT / "examples" / "ray-simple.yaml"))

        say("Waiting for Health=True (Ray starts in 4 pods; about 45 s on 2 cores)")
        await wait_healthy(kube, "sample-cluster", timeout=300)
        show(cp, "get", "rays")
        show(cp, "get", "deployments,services,pods", "-o", "wide")
        say("kubectl describe ray sample-cluster")
        show(cp, "describe", "ray", "sample-cluster")

        pods = await kube.list(POD, NAMESPACE, "ray.kubeflow.org/role=head")
        address = f"http://{pods[0]['status']['podIP']}:8265"
        say(f"Running a Ray job on the cluster through its job API ({address})")
        cmd = [
            sys.executable,
            "-m",
            "ray_operator",
            "job",
            "submit",
            str(ROOT / "examples" / "jobs" / "hello_cluster.py"),
            "--address",
            address,
            "-p",
            "tasks=12",
            "--follow",
        ]
        print(
            "$ ray-operator job submit examples/jobs/hello_cluster.py "
            f"--address {address} -p tasks=12 --follow",
            flush=True,
        )
        job = await asyncio.to_thread(subprocess.run, cmd)
        return job.returncode
    finally:
        say("Cleaning up: deleting the Ray, stopping the pods, the operator and the control plane")
        show(cp, "delete", "ray", "sample-cluster", "--ignore-not-found")
        if runner is not None:
            for _ in range(30):
                if not runner.pods:
                    break
                await asyncio.sleep(1)
            await runner.stop()
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=15)
        await kube.close()
        cp.stop()
        print("done.")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
