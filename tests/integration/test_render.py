"""``ray-operator render`` prints what the operator really creates on the test cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from ray_operator.builders.drift import differences
from ray_operator.cli import app
from ray_operator.kube import KINDS_BY_NAME, RAY, RAYJOB, Kube
from ray_operator.localkube.pod_runner import PodRunner
from tests.chart_install import ChartRelease
from tests.fixtures.ray_head import RayHead
from tests.operator_process import OperatorProcess
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


def rendered(manifest: Obj, tmp_path: Path, env: dict[str, str] | None = None) -> list[Obj]:
    """``render``'s output, with the settings ``env`` (the operator's own, to compare)."""
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    result = CliRunner().invoke(app, ["render", str(path)], env=env)
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.stdout) if d]


async def compare(kube: Kube, objects: list[Obj]) -> None:
    for want in objects:
        meta = want["metadata"]
        kind = KINDS_BY_NAME[want["kind"]]
        have = await eventually(
            lambda k=kind, m=meta: kube.get_or_none(k, m["name"], m["namespace"]),
            lambda found: found is not None,
            what=f"{want['kind']} {meta['name']}",
        )
        assert differences(want, have) == [], f"{want['kind']} {meta['name']}"


async def test_render_of_a_ray_is_what_the_operator_creates(
    kube: Kube, namespace: str, pod_runner: PodRunner, running_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    await kube.apply_manifest(manifest, namespace)
    ray = await eventually(
        lambda: kube.get(RAY, "sample-cluster", namespace),
        lambda r: "ray.kubeflow.org/defaults" in (r["metadata"].get("annotations") or {}),
        what="defaults recorded",
    )
    # The Ray as it stands (uid, recorded defaults) renders into exactly its children.
    objects = rendered(ray, tmp_path)
    assert [o["kind"] for o in objects] == ["Service", "Deployment", "Deployment"]
    await compare(kube, objects)
    # And the manifest as the user wrote it renders the same, but for the owner's uid.
    fresh = rendered({**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}},
                     tmp_path)
    for a, b in zip(fresh, objects, strict=True):
        a["metadata"]["ownerReferences"] = b["metadata"]["ownerReferences"]
        assert a == b


async def test_render_of_a_rayjob_is_what_the_operator_creates(
    kube: Kube, namespace: str, running_operator: OperatorProcess, ray_head: RayHead,
    tmp_path: Path, chart_release: ChartRelease,
) -> None:
    # Rendered with the settings the chart gives the operator (its runner image above all).
    settings = {k: v for k, v in chart_release.env("render").items() if k.startswith("RAY_")}
    job = {"apiVersion": "ray.kubeflow.org/v1", "kind": "RayJob", "metadata": {"name": "shown"},
           "spec": {"address": ray_head.address, "script": "print('shown')"}}
    created = await kube.create(RAYJOB, job, namespace)
    objects = rendered(created, tmp_path, settings)
    assert [o["kind"] for o in objects] == [
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Pod"
    ]
    await compare(kube, objects)
