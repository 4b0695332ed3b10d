"""Operator upgrades never restart a running cluster; only the user's own edits roll it.

The session's operator (the chart's, in-cluster) is stopped and started again as an upgrade
would: another default Ray image (a chart upgrade changes ``rayImage``) and other default
templates. Its children must not be written at all; then a user edit of the worker template
rolls the workers and leaves the head alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_operator.api.constants import ANNOTATION_DEFAULTS
from ray_operator.api.validation import validate_ray
from ray_operator.builders.defaults import (
    CURRENT_REVISION,
    Defaults,
    builtin_templates,
    legacy_defaults,
)
from ray_operator.builders.ray_cluster import build_children, plan_cluster
from ray_operator.kube import DEPLOYMENT, KINDS_BY_NAME, RAY, SERVICE, Kube
from ray_operator.localkube.pod_runner import PodRunner
from tests.chart_install import ChartRelease
from tests.operator_process import OperatorProcess
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]
NAME = "sample-cluster"
CHILDREN = ((DEPLOYMENT, f"{NAME}-head"), (DEPLOYMENT, f"{NAME}-worker"), (SERVICE, f"{NAME}-head"))


class Upgrades:
    """Restarts the session's operator with other settings, and puts it back afterwards."""

    def __init__(self, release: ChartRelease, session: OperatorProcess) -> None:
        self.release = release
        self.session = session
        self.current: OperatorProcess | None = None

    def restart(self, **env: str) -> OperatorProcess:
        """Stop whichever operator runs and start replica 0 again with ``env`` on top."""
        (self.current or self.session).stop()
        self.current = self.release.operator(**env).start()
        self.current.wait_ready()
        return self.current

    def finish(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.session.start()
            self.session.wait_ready()


@pytest.fixture
def upgrades(chart_release: ChartRelease, running_operator: OperatorProcess) -> Iterator[Upgrades]:
    handle = Upgrades(chart_release, running_operator)
    yield handle
    handle.finish()


async def versions(kube: Kube, ns: str) -> dict[str, str]:
    found = {}
    for kind, name in CHILDREN:
        obj = await kube.get(kind, name, ns)
        found[f"{kind.kind}/{name}"] = obj["metadata"]["resourceVersion"]
    return found


async def written(kube: Kube, ns: str) -> dict[str, Any]:
    """What only a writer of the children changes (the controller-manager writes Deployment
    status meanwhile, so their resourceVersions move): generation and metadata."""
    found: dict[str, Any] = {}
    for kind, name in CHILDREN:
        meta = (await kube.get(kind, name, ns))["metadata"]
        found[f"{kind.kind}/{name}"] = (
            meta.get("generation") if kind is DEPLOYMENT else meta["resourceVersion"],
            meta.get("labels"),
            # The deployment controller's own annotation (its revision) comes and goes on its own.
            {k: v for k, v in (meta.get("annotations") or {}).items()
             if not k.startswith("deployment.kubernetes.io/")},
            meta.get("ownerReferences"),
        )
    return found


async def healthy(kube: Kube, ns: str) -> Obj:
    async def status() -> Obj:
        found: Obj = (await kube.get(RAY, NAME, ns)).get("status") or {}
        return found

    return await eventually(status, lambda s: s.get("health") == "True", 60, f"Ray {NAME} healthy")


def other_templates(tmp_path: Path) -> Path:
    """Default templates unlike the built-in ones: another image, a label, other arguments."""
    template = {
        "metadata": {"labels": {"team": "platform"}},
        "spec": {
            "containers": [
                {
                    "name": "ray",
                    "image": "registry.example/ray:9.9.9",
                    "command": ["ray"],
                    "args": ["start", "--block"],
                }
            ]
        },
    }
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump({"head": template, "worker": template}))
    return path


async def test_an_upgrade_writes_nothing_and_a_user_edit_rolls_only_what_it_changed(
    kube: Kube, namespace: str, pod_runner: PodRunner, upgrades: Upgrades, tmp_path: Path
) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    await kube.apply_manifest(manifest, namespace)
    await healthy(kube, namespace)
    ray = await kube.get(RAY, NAME, namespace)
    recorded = json.loads(ray["metadata"]["annotations"][ANNOTATION_DEFAULTS])
    assert recorded["revision"] == CURRENT_REVISION
    assert set(recorded) == {"revision", "head", "worker"}
    before = await versions(kube, namespace)

    # (a) A new default image and new default templates: the running cluster is not touched.
    operator = upgrades.restart(
        RAY_OPERATOR_RAY_IMAGE="rayproject/ray:9.9.9",
        RAY_OPERATOR_DEFAULT_TEMPLATES=str(other_templates(tmp_path)),
    )
    await operator.more_reconciles(6)  # the window the upgrade must stay silent in
    assert await versions(kube, namespace) == before
    ray = await kube.get(RAY, NAME, namespace)
    assert json.loads(ray["metadata"]["annotations"][ANNOTATION_DEFAULTS]) == recorded

    # (b) The user changes the worker image: the workers roll, the head stays as it is.
    manifest["spec"]["worker"]["template"] = {
        "spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.60.0-py311"}]}
    }
    await kube.apply_manifest(manifest, namespace)

    async def worker() -> Obj:
        return await kube.get(DEPLOYMENT, f"{NAME}-worker", namespace)

    rolled = await eventually(
        worker,
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["image"].endswith("-py311"),
        30,
        "worker image rolled",
    )
    assert rolled["metadata"]["generation"] == 2
    after = await versions(kube, namespace)
    assert after[f"Deployment/{NAME}-head"] == before[f"Deployment/{NAME}-head"]
    assert after[f"Service/{NAME}-head"] == before[f"Service/{NAME}-head"]


async def test_the_current_defaults_are_taken_when_the_user_asks(
    kube: Kube, namespace: str, pod_runner: PodRunner, upgrades: Upgrades
) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    await kube.apply_manifest(manifest, namespace)
    await healthy(kube, namespace)
    upgrades.restart(RAY_OPERATOR_RAY_IMAGE="rayproject/ray:2.60.0-py311")
    patch = {"metadata": {"annotations": {ANNOTATION_DEFAULTS: "current"}}}
    await kube.patch(RAY, NAME, patch, namespace)

    async def images() -> list[str]:
        found = []
        for kind, name in CHILDREN[:2]:
            obj = await kube.get(kind, name, namespace)
            found.append(obj["spec"]["template"]["spec"]["containers"][0]["image"])
        return found

    await eventually(images, lambda i: i == ["rayproject/ray:2.60.0-py311"] * 2, 30, "new image")
    ray = await kube.get(RAY, NAME, namespace)
    assert "2.60.0-py311" in ray["metadata"]["annotations"][ANNOTATION_DEFAULTS]


async def test_a_record_missing_from_the_ray_is_taken_back_from_its_deployments(
    kube: Kube, namespace: str, pod_runner: PodRunner, upgrades: Upgrades, tmp_path: Path
) -> None:
    """A new cluster's record goes on its head Deployment as it is created, and on the Ray
    just after. An operator that finds it on the Deployment only (restarted in between, or
    the annotation removed by hand) takes it from there: not its own newer defaults, nor the
    first release's, and it writes none of the children."""
    manifest = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    await kube.apply_manifest(manifest, namespace)
    await healthy(kube, namespace)
    text = (await kube.get(RAY, NAME, namespace))["metadata"]["annotations"][ANNOTATION_DEFAULTS]
    head = (await kube.get(DEPLOYMENT, f"{NAME}-head", namespace))["metadata"]["annotations"]
    assert head[ANNOTATION_DEFAULTS] == text
    before = await written(kube, namespace)

    (upgrades.current or upgrades.session).stop()
    await kube.patch(RAY, NAME, {"metadata": {"annotations": {ANNOTATION_DEFAULTS: None}}},
                     namespace)
    upgrades.current = upgrades.release.operator(
        RAY_OPERATOR_RAY_IMAGE="rayproject/ray:9.9.9",
        RAY_OPERATOR_DEFAULT_TEMPLATES=str(other_templates(tmp_path)),
    ).start()
    upgrades.current.wait_ready()
    ray = await eventually(lambda: kube.get(RAY, NAME, namespace),
                           lambda r: ANNOTATION_DEFAULTS in r["metadata"].get("annotations", {}),
                           30, "the record back on the Ray")
    assert ray["metadata"]["annotations"][ANNOTATION_DEFAULTS] == text
    await upgrades.current.more_reconciles(4)
    assert await written(kube, namespace) == before


async def test_a_cluster_of_the_first_release_is_adopted_without_a_write(
    kube: Kube, baseline_namespace: str, upgrades: Upgrades
) -> None:
    """Children exactly as release 0.1.0 built them (revision 1, its hash annotation, no
    defaults recorded on the Ray) stay as they are under this operator.

    Revision 1's pods predate the restricted templates: a ``baseline`` namespace admits them.
    """
    namespace = baseline_namespace
    runner = await PodRunner(kube, namespace=namespace).start()
    try:
        await adopt_first_release(kube, namespace, upgrades)
    finally:
        await runner.stop()


async def adopt_first_release(kube: Kube, namespace: str, upgrades: Upgrades) -> None:
    upgrades.restart(RAY_OPERATOR_RAY_IMAGE="rayproject/ray:2.60.0-py311")
    manifest = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    old_image = "rayproject/ray:2.50.0"
    # The first release created its children while the operator here is stopped: the test plays
    # that release, writing what it wrote (its builders survive as revision 1).
    upgrades.current.stop()  # type: ignore[union-attr]
    ray = await kube.create(RAY, manifest, namespace)
    report = validate_ray(ray)
    assert report.resource is not None
    plan = plan_cluster(report.resource, legacy_defaults({}, old_image))
    for child in build_children(plan):
        child["metadata"]["annotations"] = {"ray.kubeflow.org/spec-hash": "0123456789abcdef"}
        await kube.create(KINDS_BY_NAME[child["kind"]], child, namespace)
    before = await written(kube, namespace)
    upgrades.current = upgrades.release.operator(
        RAY_OPERATOR_RAY_IMAGE="rayproject/ray:2.60.0-py311"
    ).start()
    upgrades.current.wait_ready()
    await healthy(kube, namespace)
    await upgrades.current.more_reconciles(2)
    assert await written(kube, namespace) == before
    ray = await kube.get(RAY, NAME, namespace)
    recorded = json.loads(ray["metadata"]["annotations"][ANNOTATION_DEFAULTS])
    assert recorded["revision"] == 1
    assert recorded["worker"]["spec"]["containers"][0]["image"] == old_image


async def test_a_cluster_of_revision_2_keeps_its_workers_until_the_user_asks_for_the_wait(
    kube: Kube, namespace: str, pod_runner: PodRunner, upgrades: Upgrades
) -> None:
    """Revision 3 adds the GCS wait to workers: a cluster the previous release made (revision 2
    recorded, children as it built them) is adopted without a write, and gets the wait only
    when its user asks for the current defaults."""
    upgrades.session.stop()
    manifest = yaml.safe_load((ROOT / "examples" / "ray-simple.yaml").read_text())
    previous = Defaults(2, builtin_templates(2, "rayproject/ray:2.60.0"))
    manifest["metadata"]["annotations"] = {ANNOTATION_DEFAULTS: previous.annotation()}
    ray = await kube.create(RAY, manifest, namespace)
    report = validate_ray(ray)
    assert report.resource is not None
    for child in build_children(plan_cluster(report.resource, previous)):
        await kube.create(KINDS_BY_NAME[child["kind"]], child, namespace)
    before = await written(kube, namespace)
    upgrades.current = upgrades.release.operator().start()
    upgrades.current.wait_ready()
    await healthy(kube, namespace)
    await upgrades.current.more_reconciles(2)
    assert await written(kube, namespace) == before

    await kube.patch(RAY, NAME, {"metadata": {"annotations": {ANNOTATION_DEFAULTS: "current"}}},
                     namespace)

    async def init_containers() -> list[str]:
        worker = await kube.get(DEPLOYMENT, f"{NAME}-worker", namespace)
        return [c["name"] for c in worker["spec"]["template"]["spec"].get("initContainers", [])]

    await eventually(init_containers, lambda names: names == ["wait-gcs"], 30, "the GCS wait")
