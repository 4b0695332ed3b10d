"""Bad input across the CLI, as users get it wrong: each a message that names the field or file,
the right exit code (1 invalid, 2 usage or settings), and never a traceback."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ray_operator.cli import app

EXAMPLES = Path(__file__).parents[1].parent / "examples"
RAY: dict[str, Any] = yaml.safe_load((EXAMPLES / "ray-full.yaml").read_text())
JOB: dict[str, Any] = yaml.safe_load((EXAMPLES / "rayjob.yaml").read_text())
PIPELINE = "apiVersion: ray.kubeflow.org/v1\nkind: RayPipeline\nmetadata: {name: p}\nspec:\n"


def ray(**edits: Any) -> str:
    """ray-full.yaml with ``path=value`` edits (``spec__worker__replicas=...``)."""
    doc = copy.deepcopy(RAY)
    for path, value in edits.items():
        *parents, last = path.split("__")
        node = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return yaml.safe_dump(doc)


def job(**spec: Any) -> str:
    doc = copy.deepcopy(JOB)
    doc["spec"].update(spec)
    return yaml.safe_dump({k: v for k, v in doc.items()})


_DELETE = object()
HEAD = "spec__head__template__spec__containers__0"
WORKER = "spec__worker__template__spec__containers__0"

# (name, command, file text or None, env, exit code, what the message must say)
CASES: list[tuple[str, list[str], str | bytes | None, dict[str, str], int, str]] = [
    # --- Ray, offline ---------------------------------------------------------------------
    ("typo replica", ["validate"], ray(spec__worker__replica=3), {}, 1, "spec.worker.replica"),
    ("typo tempalte", ["validate"], ray(spec__worker__tempalte={}), {}, 1,
     "spec.worker.tempalte"),
    ("unknown top field", ["validate"], ray(spec__workers={}), {}, 1, "spec.workers"),
    ("replicas as text", ["validate"], ray(spec__worker__replicas="3"), {}, 1,
     "spec.worker.replicas: '3'"),
    ("negative replicas", ["validate"], ray(spec__worker__replicas=-1), {}, 1,
     "spec.worker.replicas: -1"),
    ("two heads", ["validate"], ray(spec__head__replicas=2), {}, 1, "spec.head.replicas: 2"),
    ("no worker", ["validate"], ray(spec__worker=_DELETE), {}, 1, "spec.worker"),
    ("suspend as text", ["validate"], ray(spec__suspend="yes"), {}, 1, "spec.suspend: 'yes'"),
    ("name too long", ["validate"], ray(metadata__name="a" * 60), {}, 1, "metadata.name"),
    ("name upper case", ["validate"], ray(metadata__name="Big"), {}, 1, "metadata.name: 'Big'"),
    ("protocol lower case", ["validate"], ray(**{f"{HEAD}__ports__0__protocol": "tcp"}), {}, 1,
     "ports[0].protocol: 'tcp'"),
    ("port as text", ["validate"], ray(**{f"{HEAD}__ports__0__containerPort": "6379"}), {}, 1,
     "ports[0].containerPort: '6379'"),
    ("port out of range", ["validate"], ray(**{f"{HEAD}__ports__0__containerPort": 70000}), {},
     1, "ports[0].containerPort: 70000"),
    ("bad cpu quantity", ["validate"], ray(**{f"{HEAD}__resources__requests__cpu": "lots"}), {},
     1, "resources.requests.cpu: 'lots'"),
    ("container name", ["validate"], ray(**{f"{WORKER}__name": "Ray_Worker"}), {}, 1,
     "containers[0].name: 'Ray_Worker'"),
    ("no image", ["validate"], ray(**{f"{WORKER}__image": ""}), {}, 1, "containers[0].image"),
    ("head without ports", ["validate"], ray(**{f"{HEAD}__ports": []}), {}, 1,
     "containers[].ports"),
    ("no containers", ["validate"], ray(spec__worker__template__spec__containers=[]), {}, 1,
     "spec.worker.template.spec.containers"),
    # --- what is not ours ------------------------------------------------------------------
    ("group name upper case", ["validate"], ray(spec__workerGroups=[{"name": "GPU"}]), {}, 1,
     "spec.workerGroups[0].name: 'GPU'"),
    ("group name twice", ["validate"], ray(spec__workerGroups=[{"name": "a"}, {"name": "a"}]),
     {}, 1, "spec.workerGroups[1].name: 'a'"),
    ("network peer empty", ["validate"], ray(spec__networkPolicy={"enabled": True,
     "allowFrom": [{}]}), {}, 1, "spec.networkPolicy.allowFrom[0]"),
    ("redis with scheme", ["validate"], ray(spec__gcsFaultTolerance={
        "redisAddress": "redis://r:6379"}), {}, 1, "spec.gcsFaultTolerance.redisAddress"),
    ("min above max", ["validate"], ray(spec__worker__minReplicas=3, spec__worker__maxReplicas=1),
     {}, 1, "spec.worker.minReplicas: 3 is not valid; at most maxReplicas (1)"),
    ("replicas above max", ["validate"], ray(spec__worker__maxReplicas=2), {}, 1,
     "spec.worker.replicas: 3 is not valid; a count within [minReplicas 0, maxReplicas 2]"),
    ("head bounds", ["validate"], ray(spec__head__maxReplicas=1), {}, 1,
     "spec.head.maxReplicas: 1 is not valid; nothing: a Ray cluster has one head"),
    ("autoscaling no max", ["validate"], ray(spec__autoscaling={"enabled": True}), {}, 1,
     "spec.worker.maxReplicas: None is not valid; a number with spec.autoscaling enabled"),
    ("autoscaling no cpu", ["validate"], ray(spec__autoscaling={"enabled": True},
                                             spec__worker__maxReplicas=4), {}, 1,
     "spec.worker.template.spec.containers[0].resources.limits.cpu: None is not valid; a Ray "
     "container with a CPU limit"),
    ("autoscaling bash head", ["validate"], ray(spec__autoscaling={"enabled": True}), {}, 1,
     "spec.head.template.spec.containers[0].command: ['/bin/bash', '-c', '--'] is not valid; "
     "with spec.autoscaling, a head whose Ray container runs `ray start` itself"),
    ("autoscaling as text", ["validate"], ray(spec__autoscaling={"enabled": "yes"}), {}, 1,
     "spec.autoscaling.enabled: 'yes'"),
    ("idle timeout negative", ["validate"], ray(spec__autoscaling={"enabled": True,
                                                                   "idleTimeoutSeconds": -5}),
     {}, 1, "spec.autoscaling.idleTimeoutSeconds: -5"),
    ("auth mode unknown", ["validate"], ray(spec__auth={"mode": "password"}), {}, 1,
     "spec.auth.mode"),
    ("KubeRay RayCluster", ["validate"], "apiVersion: ray.io/v1\nkind: RayCluster\n"
     "metadata: {name: k}\n", {}, 1, "KubeRay's"),
    ("wrong apiVersion", ["validate"], "apiVersion: ray.io/v1\nkind: Ray\nmetadata: {name: r}\n",
     {}, 1, "apiVersion='ray.io/v1'"),
    ("a Deployment", ["validate"], "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
     {}, 1, "kind='Deployment'"),
    ("empty file", ["validate"], "", {}, 1, "no objects in it"),
    ("comments only", ["validate"], "# nothing\n", {}, 1, "no objects in it"),
    ("not UTF-8", ["validate"], b"kind: Ray\n\xff", {}, 1, "not UTF-8"),
    ("not YAML", ["validate"], "kind: [Ray\n", {}, 1, "not YAML"),
    ("metadata a string", ["validate"], "apiVersion: ray.kubeflow.org/v1\nkind: Ray\n"
     "metadata: x\n", {}, 1, "metadata='x'"),
    ("a list", ["validate"], "- a\n- b\n", {}, 1, "a list, not a Kubernetes object"),
    ("brackets kept", ["validate"], ray(spec__worker__replicas="[/tmp]"), {}, 1, "'[/tmp]'"),
    # --- RayJob ----------------------------------------------------------------------------
    ("job both targets", ["validate"], job(address="http://h:8265"), {}, 1,
     "set exactly one"),
    ("job ray:// address", ["validate"], job(cluster=None, address="ray://h:10001"), {}, 1,
     "spec.address='ray://h:10001'"),
    ("job unknown field", ["validate"], job(scrpt="x"), {}, 1, "spec.scrpt"),
    ("job both env names", ["validate"], job(runtimeEnv={"env": {}, "env_vars": {}}), {}, 1,
     "runtimeEnv.env and runtimeEnv.env_vars"),
    ("job relative upload", ["validate"], job(uploadFiles=["out.txt"]), {}, 1,
     "spec.uploadFiles=['out.txt']"),
    ("job reserved env", ["validate"], job(runnerTemplate={"spec": {"containers": [
        {"name": "runner", "env": [{"name": "RAY_JOB_NAME", "value": "x"}]}]}}), {}, 1,
     "env[0].name='RAY_JOB_NAME'"),
    ("job service account name", ["validate"], job(serviceAccountName="Bad_SA"), {}, 1,
     "spec.serviceAccountName='Bad_SA'"),
    ("job cluster and clusterSpec", ["validate"], job(clusterSpec={"worker": {}}), {}, 1,
     "set exactly one"),
    ("job ttl without clusterSpec", ["validate"], job(ttlSecondsAfterFinished=30), {}, 1,
     "only for a Ray of the job's own"),
    ("job clusterSpec typo", ["validate"], job(cluster=None, clusterSpec={"worker": {
        "replica": 1}}), {}, 1, "spec.clusterSpec.worker.replica"),
    ("job clusterSpec two heads", ["validate"], job(cluster=None, clusterSpec={
        "head": {"replicas": 2}, "worker": {}}), {}, 1, "spec.clusterSpec.head.replicas: 2"),
    ("job script and scriptFrom", ["validate"], job(scriptFrom={"configMapKeyRef": {
        "name": "s", "key": "a.py"}}), {}, 1, "and spec.scriptFrom given: set one"),
    ("job scriptFrom key", ["validate"], job(script="", scriptFrom={"configMapKeyRef": {
        "name": "s", "key": "a/b.py"}}), {}, 1, "spec.scriptFrom.configMapKeyRef.key"),
    ("job no script", ["validate"], job(script=""), {}, 1, "spec.scriptFrom.configMapKeyRef"),
    # --- RayPipeline -----------------------------------------------------------------------
    ("pipeline script and scriptFrom", ["pipeline", "validate"], PIPELINE + "  steps: [{name: a, "
     "script: x, scriptFrom: {configMapKeyRef: {name: s, key: a.py}}}]\n", {}, 1,
     "script and scriptFrom are both"),
    ("pipeline typo", ["validate"], PIPELINE + "  stpes: []\n", {}, 1, "spec.stpes"),
    ("pipeline step name", ["validate"], PIPELINE + "  steps: [{name: Train, script: x}]\n", {},
     1, "Train"),
    ("pipeline negative timeout", ["pipeline", "validate"], PIPELINE
     + "  timeoutMinutes: -5\n  steps: [{name: a, script: x}]\n", {}, 1, "spec.timeoutMinutes"),
    ("pipeline missing script file", ["pipeline", "validate"], PIPELINE
     + "  steps: [{name: a, script: nothere.py}]\n", {}, 1, "'nothere.py' cannot be read"),
    # --- render ----------------------------------------------------------------------------
    ("render typo", ["render"], ray(spec__worker__replica=3), {}, 1, "spec.worker.replica"),
    ("render empty", ["render"], "", {}, 1, "no objects in it"),
    # --- the operator's start-up -------------------------------------------------------------
    ("run resync not a number", ["run"], None, {"RAY_OPERATOR_RESYNC_SECONDS": "abc"}, 2,
     "RAY_OPERATOR_RESYNC_SECONDS='abc'"),
    ("run metrics port", ["run"], None, {"RAY_OPERATOR_METRICS_PORT": "99999"}, 2,
     "RAY_OPERATOR_METRICS_PORT='99999'"),
    ("run namespace name", ["run"], None, {"RAY_OPERATOR_NAMESPACES": "Team_A"}, 2,
     "'Team_A' is not a namespace name"),
    ("run leader election flag", ["run"], None, {"RAY_OPERATOR_LEADER_ELECTION": "maybe"}, 2,
     "RAY_OPERATOR_LEADER_ELECTION='maybe'"),
    ("run pull secret name", ["run"], None, {"RAY_OPERATOR_RUNNER_IMAGE_PULL_SECRETS": "A B"}, 2,
     "'A B' is not a Secret name"),
    ("run missing kubeconfig", ["run"], None, {"KUBECONFIG": "/nonexistent/kubeconfig"}, 2,
     "KUBECONFIG='/nonexistent/kubeconfig': no such file"),
    ("dashboard missing kubeconfig", ["dashboard", "r"], None,
     {"KUBECONFIG": "/nonexistent/kubeconfig"}, 2, "KUBECONFIG='/nonexistent/kubeconfig'"),
    ("dashboard port out of range", ["dashboard", "r", "--port", "70000"], None, {}, 2,
     "--port"),
    # --- job CLI -----------------------------------------------------------------------------
    ("job list ray://", ["job", "list", "--address", "ray://head:10001"], None, {}, 2,
     "http://head:8265"),
    ("job submit bad param", ["job", "submit", "SCRIPT", "--address", "http://h:8265",
                              "-p", "novalue"], "print(1)\n", {}, 2, "'novalue'"),
]


@pytest.mark.parametrize(
    ("command", "text", "env", "code", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_is_one_clear_message(
    tmp_path: Path, command: list[str], text: str | bytes | None, env: dict[str, str],
    code: int, message: str,
) -> None:
    argv = list(command)
    if text is not None:
        path = tmp_path / ("script.py" if "SCRIPT" in argv else "input.yaml")
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        if "SCRIPT" in argv:
            argv[argv.index("SCRIPT")] = str(path)
        else:
            argv.append(str(path))
    result = CliRunner().invoke(app, argv, env=env)
    output = result.output + (result.stderr if result.stderr_bytes else "")
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, output
    assert message in output, output


def test_there_are_at_least_forty() -> None:
    assert len(CASES) >= 40
