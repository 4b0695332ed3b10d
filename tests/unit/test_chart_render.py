"""The Helm chart rendered by Helm's own engine (helm-python-sdk): what a user installs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python")

from ray_operator.api.constants import DEFAULT_RAY_IMAGE  # noqa: E402
from ray_operator.api.crd import all_crds  # noqa: E402

CHART = Path(__file__).resolve().parents[2] / "charts" / "ray-operator"
Obj = dict[str, Any]


def render(values: Obj | None = None, namespace: str = "ray-system") -> list[Obj]:
    """Every object the chart's templates produce (not its CRDs)."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name="ray-operator", namespace=namespace)
    return [
        doc
        for name, text in sorted(manifests.items())
        if name.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def the_deployment(objs: list[Obj]) -> Obj:
    (deployment,) = of_kind(objs, "Deployment")
    return deployment


def env_of(objs: list[Obj]) -> dict[str, Any]:
    container = the_deployment(objs)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def operator_roles(objs: list[Obj]) -> list[Obj]:
    """The Roles and ClusterRoles of the operator's work (not its leader-election Role)."""
    return [
        o
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
        and not o["metadata"]["name"].endswith("-leader-election")
    ]


def all_rules(objs: list[Obj]) -> list[Obj]:
    return [rule for o in objs if o["kind"] in ("Role", "ClusterRole") for rule in o["rules"]]


def grants(rules: list[Obj]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples the rules allow."""
    return {
        (group, resource, verb)
        for r in rules
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }


def test_chart_lints_clean_in_strict_mode() -> None:
    for values in ({}, {"rbac": {"clusterWide": False}, "watchNamespaces": ["a", "b"]}):
        report = helm.lint(CHART, values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert problems == [], problems


def test_chart_crds_are_what_the_models_generate() -> None:
    with helm.Chart.load(CHART) as chart:
        shipped = {
            doc["metadata"]["name"]: doc
            for crd_file in chart.crds
            for doc in yaml.safe_load_all(crd_file["data"])
            if doc
        }
    expected = {crd["metadata"]["name"]: crd for crd in all_crds()}
    fix = "the chart's CRDs differ from src/ray_operator/api: run scripts/sync-chart-crds.sh"
    assert sorted(shipped) == sorted(expected), fix
    for name, crd in expected.items():
        assert shipped[name] == crd, f"{name}: {fix}"


def test_default_ray_image_is_the_operators_default() -> None:
    with helm.Chart.load(CHART) as chart:
        assert chart.values["rayImage"] == DEFAULT_RAY_IMAGE
    assert env_of(render())["RAY_OPERATOR_RAY_IMAGE"] == DEFAULT_RAY_IMAGE


def test_rbac_names_every_verb_and_resource() -> None:
    for values in ({}, {"rbac": {"clusterWide": False}}):
        rules = all_rules(render(values))
        assert rules
        for rule in rules:
            # No nonResourceURLs; resourceNames only where a name is known (the Lease).
            assert set(rule) - {"resourceNames"} == {"apiGroups", "resources", "verbs"}, rule
            for key in ("apiGroups", "resources", "verbs"):
                assert rule[key] and all(v != "*" and "*" not in v for v in rule[key]), rule


def test_cluster_wide_by_default() -> None:
    objs = render(namespace="ops")
    assert operator_roles(objs) == of_kind(objs, "ClusterRole")
    (role,) = of_kind(objs, "ClusterRole")
    (binding,) = of_kind(objs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ray-operator", "namespace": "ops"}
    ]
    allowed = grants(role["rules"])
    # What the Ray controller does today.
    assert {
        ("ray.kubeflow.org", "rays", "watch"),
        ("ray.kubeflow.org", "rays/status", "patch"),
        ("apps", "deployments", "create"),
        ("apps", "deployments", "update"),
        ("", "services", "update"),
        ("", "events", "create"),
        # Children name their Ray or RayJob as owner with blockOwnerDeletion.
        ("ray.kubeflow.org", "rays/finalizers", "update"),
        ("ray.kubeflow.org", "rayjobs/finalizers", "update"),
        # A runner Pod that ended before its job is replaced.
        ("", "pods", "delete"),
    } <= allowed
    # Secrets: only for Ray's token authentication (spec.auth): made once with a random token,
    # watched as metadata, deleted with the spec; never rewritten.
    assert {t[2] for t in allowed if t[1] == "secrets"} == {
        "get", "list", "watch", "create", "delete"
    }
    # Never: changing its own rights beyond what it holds.
    assert not {t for t in allowed if t[2] in ("bind", "escalate", "impersonate")}
    assert ("networking.k8s.io", "networkpolicies", "delete") in allowed
    assert {t[2] for t in allowed if t[1] == "jobs"} == {"get", "list", "watch", "create"}
    assert not {t for t in allowed if t[0] == "apiextensions.k8s.io" or t[1] == "namespaces"}
    assert env_of(objs)["RAY_OPERATOR_NAMESPACES"] == ""


def test_namespaced_rbac_in_each_watched_namespace() -> None:
    objs = render({"rbac": {"clusterWide": False}, "watchNamespaces": ["team-a", "team-b"]}, "ops")
    roles = operator_roles(objs)
    bindings = [b for b in of_kind(objs, "RoleBinding") if b["roleRef"]["name"] == "ray-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "ops"
    # No cluster-scoped rights at all.
    assert of_kind(objs, "ClusterRole") == [] and of_kind(objs, "ClusterRoleBinding") == []
    assert env_of(objs)["RAY_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_namespaced_without_a_list_watches_the_release_namespace() -> None:
    objs = render({"rbac": {"clusterWide": False}}, namespace="ops")
    assert [r["metadata"]["namespace"] for r in operator_roles(objs)] == ["ops"]
    assert env_of(objs)["RAY_OPERATOR_NAMESPACES"] == "ops"


def test_operator_pod_is_locked_down_and_probed() -> None:
    pod = the_deployment(render())["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # Both probes ask the port the operator serves them on (RAY_OPERATOR_METRICS_PORT).
    assert container["command"] == ["ray-operator", "run"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert str(ports[get["port"]]) == env_of(render())["RAY_OPERATOR_METRICS_PORT"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_image_and_operator_settings_from_values() -> None:
    objs = render(
        {
            "image": {
                "repository": "registry.example/ray-operator",
                "tag": "1.2.3",
                "pullPolicy": "Always",
            },
            "resyncSeconds": 30,
            "rayImage": "rayproject/ray:2.50.0",
        }
    )
    container = the_deployment(objs)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/ray-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    env = env_of(objs)
    assert env["RAY_OPERATOR_RESYNC_SECONDS"] == "30"
    assert env["RAY_OPERATOR_RAY_IMAGE"] == "rayproject/ray:2.50.0"
    # The job runner lives in the operator image unless told otherwise.
    assert env["RAY_OPERATOR_RUNNER_IMAGE"] == "registry.example/ray-operator:1.2.3"
    assert env_of(render({"runnerImage": "runner:9"}))["RAY_OPERATOR_RUNNER_IMAGE"] == "runner:9"


def test_service_account_for_irsa_or_brought_by_the_user() -> None:
    arn = "arn:aws:iam::111122223333:role/ray-operator"
    objs = render({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": arn}}})
    (account,) = of_kind(objs, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": arn}

    objs = render({"serviceAccount": {"create": False, "name": "made-by-cdk"}})
    assert of_kind(objs, "ServiceAccount") == []
    assert the_deployment(objs)["spec"]["template"]["spec"]["serviceAccountName"] == "made-by-cdk"
    subjects = {s["name"] for b in of_kind(objs, "ClusterRoleBinding") for s in b["subjects"]}
    assert subjects == {"made-by-cdk"}

    with pytest.raises(helm.HelmError, match="serviceAccount.name is required"):
        render({"serviceAccount": {"create": False}})


def test_watch_namespaces_as_a_comma_separated_string() -> None:
    # A string (`--set watchNamespaces=a\,b`, or a values file) works like a list.
    objs = render({"rbac": {"clusterWide": False}, "watchNamespaces": "team-a, team-b"})
    assert sorted(r["metadata"]["namespace"] for r in operator_roles(objs)) == ["team-a", "team-b"]
    assert env_of(objs)["RAY_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_two_replicas_with_leader_election_by_default() -> None:
    objs = render(namespace="ops")
    deployment = the_deployment(objs)
    assert deployment["spec"]["replicas"] == 2
    env = env_of(objs)
    assert env["RAY_OPERATOR_LEADER_ELECTION"] == "true"
    assert env["RAY_OPERATOR_LEADER_ELECTION_NAMESPACE"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert env["RAY_OPERATOR_LEADER_ELECTION_IDENTITY"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    (lease_role,) = [
        r for r in of_kind(objs, "Role") if r["metadata"]["name"].endswith("-leader-election")
    ]
    assert lease_role["metadata"]["namespace"] == "ops"
    assert grants(lease_role["rules"]) == {
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "update"),
    }
    named = [r for r in lease_role["rules"] if "get" in r["verbs"]]
    assert named[0]["resourceNames"] == [env["RAY_OPERATOR_LEADER_ELECTION_ID"]]
    # Without a Lease more than one replica would reconcile: the chart refuses it.
    with pytest.raises(helm.HelmError, match="replicas > 1 needs leaderElection"):
        render({"leaderElection": {"enabled": False}})
    single = render({"leaderElection": {"enabled": False}, "replicas": 1})
    assert the_deployment(single)["spec"]["strategy"] == {"type": "Recreate"}


def test_service_monitor_and_default_templates_when_asked() -> None:
    assert of_kind(render(), "ServiceMonitor") == []
    objs = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    (monitor,) = of_kind(objs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    templates = {
        "head": {"spec": {"containers": [{"name": "ray-head"}]}},
        "worker": {"spec": {"containers": [{"name": "ray-worker"}]}},
    }
    objs = render({"defaultTemplates": templates})
    (configmap,) = of_kind(objs, "ConfigMap")
    assert yaml.safe_load(configmap["data"]["default-templates.yaml"]) == templates
    env = env_of(objs)
    assert env["RAY_OPERATOR_DEFAULT_TEMPLATES"] == "/etc/ray-operator/default-templates.yaml"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # A typo of rbac.clusterWide would otherwise install cluster-wide rights.
        ({"rbac": {"clusterwide": False}}, "at '/rbac': additional properties 'clusterwide'"),
        ({"replicaCount": 1}, "additional properties 'replicaCount'"),
        ({"replicas": "2"}, "at '/replicas': got string, want integer"),
        ({"watchNamespaces": ["Team_A"]}, "'Team_A' does not match pattern"),
        ({"watchNamespaces": "team-a,Team_B"}, "at '/watchNamespaces'"),
        ({"image": {"pullPolicy": "sometimes"}}, "at '/image/pullPolicy'"),
        ({"metrics": {"port": 0}}, "at '/metrics/port'"),
        ({"imagePullSecrets": ["regcred"]}, "at '/imagePullSecrets/0'"),
        ({"defaultTemplates": {"workers": {}}}, "additional properties 'workers'"),
    ],
)
def test_values_outside_the_schema_are_refused_with_the_key(values: Obj, message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match="schema") as refused:
        render(values)
    assert message in str(refused.value)


def test_notes_name_the_namespace_to_apply_the_example_in() -> None:
    with helm.Chart.load(CHART) as chart:
        namespaced = chart.render(
            {"rbac": {"clusterWide": False}, "watchNamespaces": ["team-a"]},
            name="ray-operator", namespace="ray-system",
        )
        cluster_wide = chart.render({}, name="ray-operator", namespace="ray-system")
    notes = {k: v for k, v in namespaced.items() if k.endswith("NOTES.txt")}
    (text,) = notes.values()
    assert "kubectl apply -n team-a -f examples/ray-simple.yaml" in text
    (text,) = [v for k, v in cluster_wide.items() if k.endswith("NOTES.txt")]
    assert "kubectl apply -f examples/ray-simple.yaml" in text and "every namespace" in text


def test_runner_pods_pull_with_the_chart_s_image_pull_secrets() -> None:
    """The runner image is the operator's by default: the same Secrets pull it."""
    objs = render({"imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}]})
    assert env_of(objs)["RAY_OPERATOR_RUNNER_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    assert "RAY_OPERATOR_RUNNER_IMAGE_PULL_SECRETS" not in env_of(render())


def test_two_namespaced_installs_with_one_release_name_share_no_object() -> None:
    """Team installs side by side (same release name, each watching its own namespace)."""

    def keys(namespace: str) -> set[tuple[str, str, str]]:
        objs = render({"rbac": {"clusterWide": False}, "watchNamespaces": [namespace]}, namespace)
        return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
                for o in objs}

    team_a, team_b = keys("team-a"), keys("team-b")
    assert team_a and not team_a & team_b, team_a & team_b
    assert all(namespace for _, namespace, _ in team_a)  # nothing cluster-scoped
