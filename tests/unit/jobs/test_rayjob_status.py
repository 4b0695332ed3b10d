"""The RayJob's validity, target and status: pure functions, checked exactly."""

from __future__ import annotations

from ray_operator.builders.rayjob_status import (
    check_spec,
    compute_rayjob_status,
    job_address,
    ray_not_ready,
    status_patch,
)


def test_valid_spec_and_its_address() -> None:
    checked = check_spec({"cluster": "ray", "script": "print(1)"})
    assert checked.error is None and checked.spec is not None
    assert job_address(checked.spec, "team") == "http://ray-head.team.svc:8265"
    by_url = check_spec({"address": "http://h:8265/", "script": "x"}).spec
    assert by_url is not None and job_address(by_url, "team") == "http://h:8265"


def test_invalid_specs_name_the_field_the_value_and_what_is_accepted() -> None:
    cases = {
        "neither": (
            {"script": "x"},
            "spec.cluster=None, spec.address=None, spec.clusterSpec absent: set exactly one",
        ),
        "url": ({"address": "h:1", "script": "x"}, "spec.address='h:1': use an http:// or https://"),
        "s3": (
            {"cluster": "c", "script": "nobucket", "scriptLocation": "s3"},
            "spec.script='nobucket' is not valid: write an S3 object as bucket:key",
        ),
        "files": (
            {"cluster": "c", "script": "x", "uploadFiles": ["out.txt"]},
            "spec.uploadFiles=['out.txt']: list absolute paths",
        ),
        "type": ({"cluster": "c", "script": "x", "kill": "maybe"}, "spec.kill='maybe': "),
    }
    for name, (spec, start) in cases.items():
        checked = check_spec(spec)
        assert checked.spec is None, name
        assert checked.error is not None and checked.error.startswith(start), (name, checked.error)


def test_ray_not_ready_says_why() -> None:
    assert ray_not_ready(None, "r", "ns") == (
        "waiting for Ray 'r' (spec.cluster): it does not exist in namespace ns"
    )
    sick = {"status": {"health": "False", "conditions": [
        {"type": "Health", "status": "False", "message": "spec.head.replicas: 2 is not valid"}
    ]}}
    assert ray_not_ready(sick, "r", "ns") == (
        "waiting for Ray 'r' (spec.cluster) to be Healthy: status.health='False' "
        "(spec.head.replicas: 2 is not valid)"
    )
    assert ray_not_ready({"status": {"health": "True"}}, "r", "ns") is None


def test_status_mirrors_the_configmap_and_drops_stale_notes() -> None:
    previous = {"message": "waiting for Ray 'r'", "reason": "WaitingForCluster",
                "submissionId": "j-1"}
    data = {"id": "j-1", "status.jobStatus": "RUNNING", "status.startTime": "2026-11-23T10:00:00Z"}
    status = compute_rayjob_status(previous, data)
    assert status == {"submissionId": "j-1", "jobStatus": "RUNNING",
                      "startTime": "2026-11-23T10:00:00Z"}
    assert status_patch(previous, status) == {
        "message": None, "reason": None, "jobStatus": "RUNNING",
        "startTime": "2026-11-23T10:00:00Z",
    }
    assert status_patch(status, dict(status)) is None


def test_a_note_never_hides_a_finished_job() -> None:
    ended = {"jobStatus": "SUCCEEDED", "message": "done; logs at s3://b/j/logs"}
    assert compute_rayjob_status(ended, None, note="waiting", note_reason="X") == ended
    assert compute_rayjob_status({}, None, note="waiting", note_reason="X") == {
        "message": "waiting", "reason": "X",
    }


def test_a_lost_job_stays_to_be_stopped_until_it_is_and_then_says_so() -> None:
    from ray_operator.builders.rayjob_status import (
        LOST_JOB_STOPPED,
        compute_rayjob_status,
        lost_job_running,
    )

    data = {"id": "lost-1", "status.jobStatus": "FAILED", "status.reason": "JobLost",
            "status.message": "lost the Ray head while job lost-1 was RUNNING"}
    status = compute_rayjob_status({}, data)
    assert lost_job_running(status)
    stopped = compute_rayjob_status({**status, LOST_JOB_STOPPED: True}, data)
    assert not lost_job_running(stopped)
    again = compute_rayjob_status(stopped, data)  # the next reconcile, from the same ConfigMap
    assert again["message"] == (
        "lost the Ray head while job lost-1 was RUNNING; the job was stopped on Ray once its job "
        "API answered again")
    assert not lost_job_running(compute_rayjob_status({}, {**data, "status.reason": "Failed"}))
