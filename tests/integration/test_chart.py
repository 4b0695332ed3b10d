"""The chart installed on a real apiserver, and the operator running with the chart's RBAC only.

Helm's own engine (helm-python-sdk) renders the chart; the result (CRDs included) is applied to
the test apiserver; the operator then logs in as the chart's ServiceAccount (its token from the
Secret the controller-manager makes) with the settings the chart's Deployment gives it, and must
bring a Ray to Health=True without a single refused request.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.kube import DEPLOYMENT, KINDS_BY_NAME, NAMESPACE, RAY, SECRET, Kube
from ray_operator.localkube.control_plane import LocalControlPlane, free_port
from ray_operator.localkube.pod_runner import PodRunner
from tests.operator_process import OperatorProcess

helm = pytest.importorskip("helm_python")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ray-operator"
Obj = dict[str, Any]
# A whole-word 403: random namespace names such as "t-4403319a" hold the digits too.
REFUSALS = re.compile(r"\b403\b|Forbidden|forbidden|Not enough permissions")


def refused_lines(log: str) -> list[str]:
    """Lines of an operator log where the apiserver refused it for lack of rights."""
    # A namespace of an earlier test still being deleted refuses new objects with a 403 too:
    # that is not the chart's RBAC.
    return [
        line for line in log.splitlines()
        if REFUSALS.search(line) and "because it is being terminated" not in line
    ]


def render_chart(values: Obj, release: str, namespace: str) -> list[Obj]:
    """The chart's CRDs, then its templates, as `helm install` would send them."""
    with helm.Chart.load(CHART) as chart:
        crds = [d for f in chart.crds for d in yaml.safe_load_all(f["data"]) if d]
        manifests = chart.render(values, name=release, namespace=namespace)
    templates = [
        doc
        for name, text in sorted(manifests.items())
        if name.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return crds + templates


async def service_account_token(kube: Kube, name: str, namespace: str) -> str:
    """The token the controller-manager issues for a ServiceAccount (a legacy token Secret)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for secret in await kube.list(SECRET, namespace):
            annotations = secret["metadata"].get("annotations") or {}
            if (
                secret.get("type") == "kubernetes.io/service-account-token"
                and annotations.get("kubernetes.io/service-account.name") == name
                and (secret.get("data") or {}).get("token")
            ):
                return base64.b64decode(secret["data"]["token"]).decode()
        await asyncio.sleep(0.5)
    raise AssertionError(f"no token Secret for ServiceAccount {namespace}/{name} after 30 s")


async def wait_healthy(kube: Kube, name: str, namespace: str, timeout: float = 120) -> Obj:
    deadline = time.monotonic() + timeout
    ray: Obj = {}
    while time.monotonic() < deadline:
        ray = await kube.get(RAY, name, namespace)
        if (ray.get("status") or {}).get("health") == "True":
            return ray
        await asyncio.sleep(1)
    raise AssertionError(
        f"Ray {namespace}/{name} not healthy after {timeout} s: {ray.get('status')}"
    )


async def wait_replicas(kube: Kube, name: str, namespace: str, replicas: int) -> None:
    deadline = time.monotonic() + 30
    while (await kube.get(DEPLOYMENT, name, namespace))["spec"]["replicas"] != replicas:
        assert time.monotonic() < deadline, f"{name} not back to {replicas} replicas after 30 s"
        await asyncio.sleep(0.5)


def liveness_answers(url: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def install_and_run(
    control_plane: LocalControlPlane,
    kube: Kube,
    tmp_path: Path,
    values: Obj,
    release_namespace: str,
    ray_namespace: str,
) -> None:
    release = f"ro-{secrets.token_hex(3)}"  # ClusterRoles are cluster-wide: one name per test
    port = free_port()
    objs = render_chart(
        {**values, "resyncSeconds": 5, "livenessPort": port}, release, release_namespace
    )
    for obj in objs:
        # As Helm does: the release namespace for namespaced objects that name none. The API
        # validates every object, the Deployment included (its pod stays Pending: no kubelet).
        namespaced = not obj["kind"].startswith(("Cluster", "CustomResourceDefinition"))
        own = obj["metadata"].get("namespace")
        await kube.apply_manifest(obj, (own or release_namespace) if namespaced else None)
    cluster_scoped = [o for o in objs if o["kind"].startswith("Cluster")]

    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    account = pod["serviceAccountName"]
    token = await service_account_token(kube, account, release_namespace)
    kubeconfig = tmp_path / "operator-kubeconfig"
    kubeconfig.write_text(control_plane.kubeconfig_text(token, f"system:serviceaccount:{account}"))

    # The process gets what the pod would: the chart's env and command-line options.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["command"][:2] == ["ray-operator", "run"]
    operator = OperatorProcess(
        control_plane,
        extra_env={**env, "KUBECONFIG": str(kubeconfig)},
        extra_args=tuple(container["command"][2:]),
    ).start()
    try:
        probe = container["livenessProbe"]["httpGet"]
        assert liveness_answers(f"http://127.0.0.1:{port}{probe['path']}") == 200

        manifest = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
        await kube.apply_manifest(manifest, ray_namespace)
        try:
            ray = await wait_healthy(kube, manifest["metadata"]["name"], ray_namespace)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{operator.logs()[-6000:]}") from None
        assert ray["status"]["worker"]["readyReplicas"] == 3
        # A hand edit is repaired: the update rights are used too, not only create.
        worker = f"{manifest['metadata']['name']}-worker"
        await kube.patch(DEPLOYMENT, worker, {"spec": {"replicas": 1}}, ray_namespace)
        await wait_replicas(kube, worker, ray_namespace, 3)
    finally:
        operator.stop()
        for obj in cluster_scoped:
            await kube.delete(KINDS_BY_NAME[obj["kind"]], obj["metadata"]["name"])
    refused = refused_lines(operator.logs())
    assert refused == [], "the operator was refused with the chart's RBAC:\n" + "\n".join(refused)


@pytest.mark.slow
async def test_cluster_wide_install_runs_the_operator(
    control_plane: LocalControlPlane,
    kube: Kube,
    namespace: str,
    pod_runner: PodRunner,
    tmp_path: Path,
) -> None:
    await install_and_run(control_plane, kube, tmp_path, {}, namespace, namespace)


@pytest.mark.slow
async def test_single_namespace_install_runs_the_operator(
    control_plane: LocalControlPlane,
    kube: Kube,
    namespace: str,
    pod_runner: PodRunner,
    tmp_path: Path,
) -> None:
    # The operator lives in its own namespace and watches (and holds rights in) the test's only.
    ops = f"ops-{secrets.token_hex(3)}"
    await kube.create(
        NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ops}}
    )
    try:
        values = {"rbac": {"clusterWide": False}, "watchNamespaces": [namespace]}
        await install_and_run(control_plane, kube, tmp_path, values, ops, namespace)
    finally:
        await kube.delete(NAMESPACE, ops)
