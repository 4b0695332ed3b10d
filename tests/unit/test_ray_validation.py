"""Validation messages name the field, the value and what is accepted; the CLI shares them."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from ray_operator.api.validation import MAX_NAME_LENGTH, validate_ray
from ray_operator.cli import app

EXAMPLES = Path(__file__).parents[2] / "examples"


def ray(spec: dict, name: str = "c") -> dict:
    return {
        "apiVersion": "ray.kubeflow.org/v1",
        "kind": "Ray",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_both_original_examples_are_valid_and_only_limit_is_unknown() -> None:
    simple = validate_ray(yaml.safe_load((EXAMPLES / "ray-simple.yaml").read_text()))
    full = validate_ray(yaml.safe_load((EXAMPLES / "ray-full.yaml").read_text()))
    assert simple.ok and simple.unknown_fields == []
    assert full.ok
    assert full.unknown_fields == [
        "spec.head.template.spec.containers[0].resources.limit",
        "spec.worker.template.spec.containers[0].resources.limit",
    ]


def test_head_replicas_must_be_zero_or_one() -> None:
    (problem,) = validate_ray(ray({"head": {"replicas": 2}, "worker": {"replicas": 1}})).errors
    assert (problem.field, problem.value) == ("spec.head.replicas", 2)
    assert "0 or 1" in str(problem)


def test_wrong_types_and_negative_counts_name_the_field() -> None:
    (problem,) = validate_ray(ray({"worker": {"replicas": -1}})).errors
    assert problem.field == "spec.worker.replicas" and problem.value == -1
    (problem,) = validate_ray(ray({"worker": {"replicas": "3x"}})).errors
    assert problem.field == "spec.worker.replicas"


def test_duplicate_port_numbers_across_containers() -> None:
    spec = {
        "worker": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a", "image": "i", "ports": [{"containerPort": 80}]},
                        {"name": "b", "image": "i", "ports": [{"containerPort": 80}]},
                    ]
                }
            }
        }
    }
    (problem,) = validate_ray(ray(spec)).errors
    assert problem.field == "spec.worker.template.spec.containers[1].ports[0].containerPort"
    assert "containers[0].ports[0]" in problem.accepted


def test_same_port_number_on_tcp_and_udp_is_fine() -> None:
    spec = {
        "worker": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "image": "i",
                            "ports": [
                                {"containerPort": 53},
                                {"containerPort": 53, "protocol": "UDP"},
                            ],
                        }
                    ]
                }
            }
        }
    }
    assert validate_ray(ray(spec)).ok


def test_name_length_limit_is_exact() -> None:
    assert validate_ray(ray({"worker": {}}, "a" * MAX_NAME_LENGTH)).ok
    (problem,) = validate_ray(ray({"worker": {}}, "a" * (MAX_NAME_LENGTH + 1))).errors
    assert problem.field == "metadata.name"


def test_unknown_fields_deep_in_the_template_are_found() -> None:
    spec = {
        "worker": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "image": "i",
                            "livenessProbe": {"httpGet": {"port": 1, "pathh": "/"}},
                        }
                    ],
                    "nodeSelectorr": {},
                }
            }
        }
    }
    report = validate_ray(ray(spec))
    assert report.ok
    assert sorted(report.unknown_fields) == [
        "spec.worker.template.spec.containers[0].livenessProbe.httpGet.pathh",
        "spec.worker.template.spec.nodeSelectorr",
    ]


def test_cli_validate_exits_non_zero_with_the_same_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(ray({"head": {"replicas": 3}, "worker": {}})))
    runner = CliRunner()
    result = runner.invoke(app, ["validate", str(bad), str(EXAMPLES / "ray-full.yaml")])
    assert result.exit_code == 1
    assert "spec.head.replicas: 3 is not valid; a Ray cluster has one head: 0 or 1" in result.output
    assert (
        "warning: unknown field spec.head.template.spec.containers[0].resources.limit"
        in result.output
    )
    ok = runner.invoke(app, ["validate", str(EXAMPLES / "ray-simple.yaml")])
    assert ok.exit_code == 0 and "valid" in ok.output


def test_cli_crds_prints_every_crd() -> None:
    result = CliRunner().invoke(app, ["crds"])
    assert result.exit_code == 0
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(result.output)]
    assert "rays.ray.kubeflow.org" in names


def test_fields_of_a_current_kubernetes_are_known_offline() -> None:
    # The shipped table is Kubernetes 1.37's: a native sidecar, a scheduling gate and DRA
    # resource claims are pod template fields, not typos.
    from tests.integration.test_pod_fields import worker_template

    manifest = {
        "apiVersion": "ray.kubeflow.org/v1",
        "kind": "Ray",
        "metadata": {"name": "current"},
        "spec": {"worker": {"template": worker_template()}},
    }
    report = validate_ray(manifest)
    assert report.ok, report.message()
    assert report.unknown_fields == []


def simple() -> dict:
    loaded: dict = yaml.safe_load((EXAMPLES / "ray-full.yaml").read_text())
    return loaded


def errors_of(doc: dict) -> list[str]:
    return [str(p) for p in validate_ray(doc).errors]


def test_typos_outside_templates_are_errors_that_list_the_fields() -> None:
    doc = simple()
    doc["spec"]["worker"]["replica"] = 3
    doc["spec"]["worker"]["tempalte"] = doc["spec"]["worker"].pop("template", {})
    found = errors_of(doc)
    assert "spec.worker.replica: 3 is not valid; an unknown field (the fields here are " \
        "replicas, template, minReplicas, maxReplicas, scaleStrategy); it would be ignored" \
        in found
    assert any(e.startswith("spec.worker.tempalte: ") for e in found)
    doc = simple()
    doc["spec"]["workers"] = {}
    assert any(e.startswith("spec.workers: ") and "head, worker" in e for e in errors_of(doc))


def test_values_the_apiserver_would_refuse_are_refused_offline() -> None:
    doc = simple()
    doc["spec"]["worker"]["replicas"] = "3"
    expected = "spec.worker.replicas: '3' is not valid; a whole number, without quotes"
    assert expected in errors_of(doc)

    doc = simple()
    head = doc["spec"]["head"]["template"]["spec"]["containers"]
    head[0]["ports"][0]["protocol"] = "tcp"
    (found,) = errors_of(doc)
    assert found == ("spec.head.template.spec.containers[0].ports[0].protocol: 'tcp' is not "
                     "valid; one of 'TCP', 'UDP' or 'SCTP'")
    head[0]["ports"][0]["protocol"] = "TCP"
    head[0]["resources"] = {"limits": {"cpu": "two", "memory": "4GB"}}
    head.append({"name": head[0]["name"], "image": "x"})
    head.append({"name": "Side_Car", "image": "x"})
    text = "\n".join(errors_of(doc))
    assert "containers[0].resources.limits.cpu: 'two' is not valid; a quantity" in text
    assert "containers[0].resources.limits.memory: '4GB' is not valid; a quantity" in text
    assert f"containers[1].name: '{head[0]['name']}' is not valid; a name not used already" in text
    assert "containers[2].name: 'Side_Car' is not valid; a DNS label" in text


def test_quantities_kubernetes_accepts_are_accepted() -> None:
    doc = simple()
    container = doc["spec"]["worker"]["template"]["spec"]["containers"][0]
    for quantity in ("500m", "2", "1.5", "512Mi", "4Gi", "1e3", 2, 0.5):
        container["resources"] = {"limits": {"cpu": quantity}, "requests": {"memory": "1G"}}
        assert errors_of(doc) == [], quantity


def test_a_head_without_ports_is_refused() -> None:
    doc = simple()
    for container in doc["spec"]["head"]["template"]["spec"]["containers"]:
        container.pop("ports", None)
    (error,) = errors_of(doc)
    assert error.startswith("spec.head.template.spec.containers[].ports: [] is not valid; at least")
