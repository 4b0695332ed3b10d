"""The operator skips kopf's diff base; that is only right while no handler reads a diff."""

import kopf

import ray_operator.controllers  # noqa: F401 - registers the handlers
from ray_operator.controllers.runtime import NoDiffBase


def test_only_watch_handlers_are_registered() -> None:
    registry = kopf.get_default_registry()
    watching = registry._watching.get_all_handlers()
    assert len(watching) >= 3, "the Ray, RayJob and RayPipeline watch handlers are registered"
    # on.create / on.update / on.field / timers / daemons would need the diff base NoDiffBase
    # drops: adding one means giving the default diff base back.
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._spawning.get_all_handlers()) == []


def test_no_diff_base_builds_nothing() -> None:
    body = kopf.Body({"metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {"big": [1] * 100}})
    assert NoDiffBase().build(body=body) == {}
