"""Status computation: Health follows the Deployments; times move only on change."""

from __future__ import annotations

from typing import Any

from ray_operator.builders.ray_status import Observed, compute_status, status_changed


def deployment(
    replicas: int, available: int, *, failure: bool = False, generation: int = 1
) -> dict[str, Any]:
    conditions = [
        {
            "type": "Available",
            "status": "True" if available >= replicas else "False",
            "reason": "MinimumReplicasAvailable",
            "message": "ok",
        },
        {
            "type": "Progressing",
            "status": "True",
            "reason": "NewReplicaSetAvailable",
            "message": "p",
        },
    ]
    if failure:
        conditions.append(
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": 'pods "x" is forbidden: exceeded quota',
            }
        )
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": available,
            "availableReplicas": available,
            "updatedReplicas": replicas,
            "conditions": conditions,
        },
    }


def observe(head: Any, worker: Any, error: str | None = None) -> Observed:
    return Observed(
        generation=1,
        head_desired=1,
        worker_desired=3,
        head=head,
        worker=worker,
        worker_selector="sel",
        error=error,
    )


def health(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Health")


def test_health_is_true_only_when_everything_is_available() -> None:
    status = compute_status(None, observe(deployment(1, 1), deployment(3, 3)), "t1")
    assert health(status)["status"] == "True" and status["workersReady"] == "3/3"
    status = compute_status(None, observe(deployment(1, 1), deployment(3, 2)), "t1")
    assert health(status)["status"] == "Unknown"
    assert "workers" in health(status)["message"]
    status = compute_status(None, observe(None, None), "t1")
    assert health(status)["status"] == "Unknown"


def test_a_replica_failure_makes_health_false_with_the_reason() -> None:
    status = compute_status(None, observe(deployment(1, 1), deployment(3, 0, failure=True)), "t1")
    assert health(status)["status"] == "False"
    assert "exceeded quota" in health(status)["message"]
    failure = next(
        c for c in status["conditions"] if c["type"] == "RayWorkerDeploymentReplicaFailure"
    )
    assert failure["status"] == "True"


def test_an_invalid_spec_is_health_false_invalid_spec() -> None:
    status = compute_status(None, observe(None, None, error="spec.head.replicas: 2"), "t1")
    assert (health(status)["status"], health(status)["reason"]) == ("False", "InvalidSpec")


def test_nothing_changes_when_nothing_changed() -> None:
    first = compute_status(None, observe(deployment(1, 1), deployment(3, 3)), "t1")
    second = compute_status(first, observe(deployment(1, 1), deployment(3, 3)), "t2")
    assert not status_changed(first, second)
    assert health(second)["lastTransitionTime"] == "t1"


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = compute_status(None, observe(deployment(1, 1), deployment(3, 2)), "t1")
    second = compute_status(first, observe(deployment(1, 1), deployment(3, 3)), "t2")
    assert status_changed(first, second)
    assert health(second)["lastTransitionTime"] == "t2"
    head_available = next(
        c for c in second["conditions"] if c["type"] == "RayHeadDeploymentAvailable"
    )
    assert head_available["lastTransitionTime"] == "t1"
    assert second["startTime"] == "t1"


def test_worker_groups_count_in_the_workers_column_health_and_a_condition_each() -> None:
    def with_gpu(gpu: Any) -> dict[str, Any]:
        observed = observe(deployment(1, 1), deployment(3, 3))
        return compute_status(
            None, Observed(**{**observed.__dict__, "groups": (("gpu", 2, gpu),)}), "t"
        )

    waiting = with_gpu(deployment(2, 1))
    assert waiting["workersReady"] == "4/5"
    assert waiting["health"] == "Unknown"
    assert "worker group 'gpu'" in waiting["conditions"][0]["message"]
    (group,) = waiting["workerGroups"]
    assert group == {"name": "gpu", "desired": 2, "replicas": 2, "readyReplicas": 1,
                     "availableReplicas": 1, "updatedReplicas": 2}
    gpu_condition = next(c for c in waiting["conditions"]
                         if c["type"] == "RayWorkerGroup-gpu-Available")
    assert gpu_condition["status"] == "False"

    ready = with_gpu(deployment(2, 2))
    assert ready["workersReady"] == "5/5" and ready["health"] == "True"
    failing = with_gpu(deployment(2, 0, failure=True))
    assert failing["health"] == "False" and "exceeded quota" in failing["conditions"][0]["message"]
    assert "workerGroups" not in compute_status(None, observe(deployment(1, 1), deployment(3, 3)),
                                                "t")


def test_groups_all_removed_are_taken_out_of_the_status_once_and_then_nothing_changes() -> None:
    shown = compute_status(
        None,
        Observed(**{**observe(deployment(1, 1), deployment(3, 3)).__dict__,
                    "groups": (("gpu", 1, deployment(1, 1)),)}),
        "t",
    )
    assert shown["workerGroups"]
    gone = compute_status(shown, observe(deployment(1, 1), deployment(3, 3)), "t")
    assert "workerGroups" in gone and gone["workerGroups"] is None  # a merge patch removes it
    assert status_changed(shown, gone)
    written = {k: v for k, v in {**shown, **gone}.items() if v is not None}  # what is stored
    again = compute_status(written, observe(deployment(1, 1), deployment(3, 3)), "t")
    assert not status_changed(written, again)  # no write loop
