"""Session-wide real parts: a local control plane (etcd, kube-apiserver, controller-manager)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from ray_operator.kube import NAMESPACE, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.pod_runner import PodRunner
from tests.operator_process import OperatorProcess


@pytest.fixture(scope="session")
def control_plane() -> Iterator[LocalControlPlane]:
    """A real apiserver with etcd and the controller-manager, for the whole test session."""
    with LocalControlPlane() as cp:
        yield cp


@pytest.fixture(scope="session")
async def kube(control_plane: LocalControlPlane) -> AsyncIterator[Kube]:
    """A client for the test apiserver, with every CRD of the project installed."""
    from ray_operator.api.crd import all_crds
    from ray_operator.localkube.crds import install_crds

    client = await Kube.connect(str(control_plane.kubeconfig))
    await install_crds(client, all_crds())
    yield client
    await client.close()


@pytest.fixture
async def namespace(kube: Kube) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted after it."""
    name = f"t-{secrets.token_hex(4)}"
    await kube.create(
        NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    await kube.delete(NAMESPACE, name)


# Shared fixtures of the real Ray head and the S3 server live in tests/fixtures/ (see there).
pytest_plugins = ["tests.fixtures.ray_head", "tests.fixtures.s3"]


@pytest.fixture(scope="session")
def running_operator(control_plane: LocalControlPlane, kube: Kube) -> Iterator[OperatorProcess]:
    """The operator (`ray-operator run`) as a process against the test apiserver, cluster-wide."""
    proc = OperatorProcess(control_plane).start()
    yield proc
    proc.stop()


@pytest.fixture
async def pod_runner(kube: Kube, namespace: str) -> AsyncIterator[PodRunner]:
    """Marks the test namespace's Ray pods Running and Ready (no processes): the kubelet's part."""
    runner = await PodRunner(kube, namespace=namespace).start()
    yield runner
    await runner.stop()
