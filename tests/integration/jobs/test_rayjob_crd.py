"""The RayJob CRD generated from the model is accepted by the apiserver and validates input."""

from __future__ import annotations

import pytest

from ray_operator.api.rayjob import RayJobSpec
from ray_operator.kube import RAYJOB, Kube, KubeError


def rayjob(name: str, spec: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "ray.kubeflow.org/v1",
        "kind": "RayJob",
        "metadata": {"name": name},
        "spec": spec,
    }


async def test_rayjob_applies_and_rejects_bad_fields(kube: Kube, namespace: str) -> None:
    spec = {
        "cluster": "ray",
        "script": "print(1)",
        "parameters": {"a": "b"},
        "activeDeadlineSeconds": 60,
    }
    created = await kube.create(RAYJOB, rayjob("ok", spec), namespace)
    assert RayJobSpec.model_validate(created["spec"]).target_error() is None
    with pytest.raises(KubeError) as err:
        await kube.create(RAYJOB, rayjob("bad", {**spec, "activeDeadlineSeconds": 0}), namespace)
    assert "activeDeadlineSeconds" in str(err.value)
    with pytest.raises(KubeError) as err:
        await kube.create(RAYJOB, rayjob("bad2", {**spec, "scriptLocation": "ftp"}), namespace)
    assert "scriptLocation" in str(err.value)


def test_target_error_names_both_fields() -> None:
    spec = RayJobSpec(script="x", cluster="a", address="http://h:8265")
    assert spec.target_error() == (
        "spec.cluster='a', spec.address='http://h:8265', spec.clusterSpec absent: set exactly "
        "one (a Ray name in this namespace, a job API URL, or the spec of a Ray of the job's own)"
    )
