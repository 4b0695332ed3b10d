"""The Helm chart installed on the local control plane, and operators run with its rights only.

Helm's own engine (helm-python-sdk) renders the chart; the objects are applied as `helm install`
would send them (CRDs first; the release namespace for namespaced objects that name none). An
operator process then runs as the chart's Deployment would run it: the same command and
environment (``fieldRef`` values resolved as the kubelet would), in-cluster, with a projected
token of the chart's ServiceAccount. No kubelet runs the Deployment's own pods.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ray_operator.kube import KINDS_BY_NAME, NAMESPACE, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from ray_operator.localkube.service_account import TokenDirectory, wait_for_account
from tests.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "ray-operator"
Obj = dict[str, Any]
# A whole-word 403: random namespace names such as "t-4403319a" hold the digits too.
REFUSALS = re.compile(r"\b403\b|Forbidden|forbidden|Not enough permissions")


def refused_lines(log: str) -> list[str]:
    """Lines of an operator log where the apiserver refused it for lack of rights."""
    # A namespace of an earlier test still being deleted refuses new objects with a 403 too:
    # that is not the chart's RBAC.
    return [
        line
        for line in log.splitlines()
        if REFUSALS.search(line) and "because it is being terminated" not in line
    ]


def render_chart(values: Obj, release: str, namespace: str) -> list[Obj]:
    """The chart's CRDs, then its templates, as `helm install` would send them."""
    import helm_python as helm

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


@dataclass
class ChartRelease:
    """One installed release of the chart."""

    control_plane: LocalControlPlane
    kube: Kube
    values: Obj
    namespace: str
    release: str = field(default_factory=lambda: f"ro-{secrets.token_hex(3)}")
    objects: list[Obj] = field(default_factory=list)
    identities: list[TokenDirectory] = field(default_factory=list)

    async def install(self) -> ChartRelease:
        """Render and apply the chart (the release namespace is created when missing)."""
        if await self.kube.get_or_none(NAMESPACE, self.namespace) is None:
            await self.kube.create(
                NAMESPACE,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
            )
        self.objects = render_chart(self.values, self.release, self.namespace)
        for obj in self.objects:
            namespaced = not obj["kind"].startswith(("Cluster", "CustomResourceDefinition"))
            own = obj["metadata"].get("namespace")
            await self.kube.apply_manifest(obj, (own or self.namespace) if namespaced else None)
        return self

    async def uninstall(self) -> None:
        """Remove the cluster-scoped objects (namespaced ones go with their namespaces)."""
        for identity in self.identities:
            identity.stop()
        for obj in self.objects:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                await self.kube.delete(KINDS_BY_NAME[obj["kind"]], obj["metadata"]["name"])

    @property
    def deployment(self) -> Obj:
        """The operator's Deployment as rendered."""
        (deployment,) = [o for o in self.objects if o["kind"] == "Deployment"]
        return deployment

    @property
    def container(self) -> Obj:
        """The operator container of the Deployment."""
        (container,) = self.deployment["spec"]["template"]["spec"]["containers"]
        return container

    def env(self, pod: str) -> dict[str, str]:
        """The container's environment as the kubelet resolves it for pod ``pod``."""
        fields = {"metadata.namespace": self.namespace, "metadata.name": pod}
        resolved = {}
        for item in self.container["env"]:
            if "value" in item:
                resolved[item["name"]] = str(item["value"])
                continue
            path = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if path not in fields:
                raise AssertionError(f"the test does not resolve env {item}")
            resolved[item["name"]] = fields[path]
        return resolved

    def operator(self, pod: str = "0", **env: str) -> OperatorProcess:
        """Replica ``pod`` of the Deployment as a process (not started).

        The same ``pod`` is the same pod restarted (its name, hence its Lease identity, stays).
        """
        account = self.deployment["spec"]["template"]["spec"]["serviceAccountName"]
        cp = self.control_plane
        wait_for_account(cp.server, cp.token, self.namespace, account)
        identity = TokenDirectory(
            cp.workdir / f"identity-{self.release}-{secrets.token_hex(3)}",
            cp.server,
            cp.token,
            cp.workdir / "certs" / "apiserver.crt",
            self.namespace,
            account,
        ).start()
        self.identities.append(identity)
        command = self.container["command"]
        assert command[:2] == ["ray-operator", "run"], command
        return OperatorProcess(
            cp,
            resync_seconds=float(self.values.get("resyncSeconds", 60)),
            extra_env={**self.env(f"{self.release}-{pod}"), **env},
            extra_args=tuple(command[2:]),
            identity=identity,
        )
