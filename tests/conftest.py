"""Session-wide real parts: a local control plane (etcd, kube-apiserver, controller-manager)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from ray_operator.kube import NAMESPACE, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.chart_install import ChartRelease
from tests.operator_process import OperatorProcess

# Pod Security admission labels: what a namespace enforces.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
BASELINE = {"pod-security.kubernetes.io/enforce": "baseline"}


@pytest.fixture(scope="session")
def control_plane() -> Iterator[LocalControlPlane]:
    """A real apiserver with etcd and the controller-manager, for the whole test session."""
    with LocalControlPlane() as cp:
        yield cp


@pytest.fixture(scope="session")
async def kube(control_plane: LocalControlPlane) -> AsyncIterator[Kube]:
    """An admin client for the test apiserver, with every CRD of the project installed."""
    from ray_operator.api.crd import all_crds
    from ray_operator.localkube.crds import install_crds

    client = await Kube.connect(str(control_plane.kubeconfig))
    await install_crds(client, all_crds())
    yield client
    await client.close()


async def make_namespace(kube: Kube, labels: dict[str, str]) -> str:
    """A namespace with a random name and these labels."""
    name = f"t-{secrets.token_hex(4)}"
    await kube.create(
        NAMESPACE,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
    )
    return name


@pytest.fixture
async def namespace(kube: Kube) -> AsyncIterator[str]:
    """A fresh namespace for one test, enforcing Pod Security ``restricted``, deleted after it."""
    name = await make_namespace(kube, RESTRICTED)
    yield name
    await kube.delete(NAMESPACE, name)


@pytest.fixture
async def baseline_namespace(kube: Kube) -> AsyncIterator[str]:
    """A namespace enforcing only ``baseline``: for user templates written without a
    securityContext (the original's full example), which ``restricted`` would refuse."""
    name = await make_namespace(kube, BASELINE)
    yield name
    await kube.delete(NAMESPACE, name)


# Shared fixtures of the real Ray head and the S3 server live in tests/fixtures/ (see there).
pytest_plugins = ["tests.fixtures.ray_head", "tests.fixtures.s3"]


@pytest.fixture(scope="session")
async def chart_release(
    control_plane: LocalControlPlane, kube: Kube
) -> AsyncIterator[ChartRelease]:
    """The chart installed cluster-wide in ``ray-system``, as a user would install it."""
    release = await ChartRelease(control_plane, kube, {"resyncSeconds": 5}, "ray-system").install()
    yield release
    await release.uninstall()


@pytest.fixture(scope="session")
def running_operator(chart_release: ChartRelease) -> Iterator[OperatorProcess]:
    """The operator as the chart runs it: its rights only, in-cluster, cluster-wide.

    The only operator of the session: no other one serves the same objects.
    """
    proc = chart_release.operator().start()
    proc.wait_ready()
    yield proc
    proc.stop()


@pytest.fixture
async def pod_runner(kube: Kube, namespace: str) -> AsyncIterator[PodRunner]:
    """Marks the test namespace's Ray pods Running and Ready (no processes): the kubelet's part."""
    runner = await PodRunner(kube, namespace=namespace).start()
    yield runner
    await runner.stop()
