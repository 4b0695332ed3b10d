"""The local pod runner resolves env and commands as the kubelet does."""

from __future__ import annotations

import os

import pytest

from ray_operator.localkube.pod_env import container_argv, container_env, expand, quantity

POD = {
    "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}},
    "spec": {
        "containers": [
            {
                "name": "c",
                "command": ["ray"],
                "args": [
                    "start",
                    "--address=$(RAY_HEAD_SERVICE):6379",
                    "--cpus=$(CPUS)",
                    "$$(literal)",
                    "$(MISSING)",
                ],
                "resources": {"limits": {"cpu": "1500m", "memory": "2Gi"}},
                "env": [
                    {
                        "name": "RAY_NODE_IP",
                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                    },
                    {"name": "RAY_HEAD_SERVICE", "value": "head-of-$(RAY_NODE_IP)"},
                    {
                        "name": "CPUS",
                        "valueFrom": {
                            "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu"}
                        },
                    },
                    {
                        "name": "MEM",
                        "valueFrom": {
                            "resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}
                        },
                    },
                    {
                        "name": "APP",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
                    },
                    {
                        "name": "FROM_CM",
                        "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}},
                    },
                ],
            }
        ]
    },
}


def lookup(kind: str, name: str) -> dict[str, str] | None:
    return {"k": "v"} if (kind, name) == ("ConfigMap", "cm") else None


def test_env_is_resolved_in_order_with_references() -> None:
    env = container_env(POD, POD["spec"]["containers"][0], "10.0.0.7", lookup)
    assert env == {
        "RAY_NODE_IP": "10.0.0.7",
        "RAY_HEAD_SERVICE": "head-of-10.0.0.7",
        "CPUS": "2",
        "MEM": "2048",
        "APP": "x",
        "FROM_CM": "v",
    }


def test_command_is_expanded_like_the_kubelet() -> None:
    env = container_env(POD, POD["spec"]["containers"][0], "10.0.0.7", lookup)
    argv = container_argv(POD["spec"]["containers"][0], env)
    assert argv == [
        "ray",
        "start",
        "--address=head-of-10.0.0.7:6379",
        "--cpus=2",
        "$(literal)",
        "$(MISSING)",
    ]


def test_no_cpu_limit_means_the_node_cpus() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "env": [
                        {"name": "N", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
                    ],
                }
            ]
        },
    }
    assert container_env(pod, pod["spec"]["containers"][0], "ip", lookup)["N"] == str(
        os.cpu_count()
    )


def test_missing_required_key_is_an_error_naming_it() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "env": [
                        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}
                    ],
                }
            ]
        },
    }
    with pytest.raises(ValueError, match="Secret s has no key 'token'"):
        container_env(pod, pod["spec"]["containers"][0], "ip", lookup)


def test_quantities() -> None:
    assert quantity("500m") == quantity("0.5")
    assert quantity("1Gi") == 2**30
    assert expand("$(A)-$$(A)", {"A": "1"}) == "1-$(A)"


def test_run_as_non_root_needs_a_numeric_user_as_a_kubelet_does() -> None:
    from ray_operator.localkube.pod_env import non_root_problem, run_as

    container = {"name": "ray-head", "securityContext": {}}
    pod = {"metadata": {"name": "p"}, "spec": {"securityContext": {"runAsNonRoot": True},
                                               "containers": [container]}}
    assert "cannot verify user is non-root" in (non_root_problem(pod, container) or "")
    pod["spec"]["securityContext"]["runAsUser"] = 1000
    assert non_root_problem(pod, container) is None
    container["securityContext"] = {"runAsUser": 0}
    assert "breaks non-root policy" in (non_root_problem(pod, container) or "")
    container["securityContext"] = {"runAsGroup": 100}
    assert run_as(pod, container) == (1000, 100)


def test_volume_mounts_become_bind_mounts_in_the_container_s_namespace() -> None:
    """The pod runner's part of a kubelet's volume manager: subPath, readOnly, unknown kinds."""
    from pathlib import Path

    from ray_operator.localkube.pod_runner import _mount_commands

    container = {"volumeMounts": [
        {"name": "export", "mountPath": "/ray/export", "subPath": "run-1"},
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
    ]}
    volumes = {"export": Path("/srv/pv"), "data": Path("/srv/data")}
    assert _mount_commands(container, volumes) == [
        "mkdir -p /srv/pv/run-1 /ray/export",
        "mount --bind /srv/pv/run-1 /ray/export",
        "mkdir -p /srv/data /data",
        "mount --bind /srv/data /data",
        "mount -o remount,bind,ro /data",
    ]
