"""The bad manifests of tests/unit/test_bad_inputs.py, applied to the cluster with kubectl.

Offline, ``validate`` judges them; here the apiserver (CRD schema, strict field validation) or the
operator (status and a Warning event) does, and either way the user is told which field. The
operator runs with the chart's rights; kubectl is the project's own.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from ray_operator.kube import EVENT, KINDS_BY_NAME, Kube
from ray_operator.localkube.control_plane import LocalControlPlane
from tests.unit.test_bad_inputs import CASES
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("running_operator")

# Case of the offline table -> what the cluster's answer must name (its wording, not validate's).
JUDGED: dict[str, str] = {
    "typo replica": "spec.worker.replica",
    "typo tempalte": "spec.worker.tempalte",
    "unknown top field": "spec.workers",
    "replicas as text": "spec.worker.replicas",
    "negative replicas": "spec.worker.replicas",
    "two heads": "spec.head.replicas",
    "no worker": "spec.worker",
    "suspend as text": "spec.suspend",
    "name too long": "metadata.name",
    "name upper case": "metadata.name",
    "protocol lower case": "ports[0].protocol",
    "port as text": "ports[0].containerPort",
    "port out of range": "ports[0].containerPort",
    "bad cpu quantity": "resources.requests.cpu",
    "container name": "containers[0].name",
    "no image": "containers[0].image",
    "head without ports": "ports",
    "no containers": "spec.worker.template.spec.containers",
    "KubeRay RayCluster": "RayCluster",
    "wrong apiVersion": "ray.io/v1",
    "brackets kept": "spec.worker.replicas",
    "job both targets": "exactly one",
    "job ray:// address": "spec.address",
    "job unknown field": "spec.scrpt",
    "job both env names": "runtimeEnv.env and runtimeEnv.env_vars",
    "job relative upload": "spec.uploadFiles",
    "job reserved env": "RAY_JOB_NAME",
    "job service account name": "spec.serviceAccountName",
    "job cluster and clusterSpec": "exactly one",
    "job ttl without clusterSpec": "spec.ttlSecondsAfterFinished",
    "job clusterSpec typo": "spec.clusterSpec.worker.replica",
    "job clusterSpec two heads": "spec.clusterSpec.head.replicas",
    "job script and scriptFrom": "spec.scriptFrom",
    "group name upper case": "spec.workerGroups[0].name",
    "group name twice": "spec.workerGroups[1].name",
    "network peer empty": "spec.networkPolicy.allowFrom[0]",
    "redis with scheme": "spec.gcsFaultTolerance.redisAddress",
    "auth mode unknown": "spec.auth.mode",
    "job scriptFrom key": "spec.scriptFrom.configMapKeyRef.key",
    "pipeline typo": "spec.stpes",
    "pipeline step name": "Train",
    "pipeline negative timeout": "spec.timeoutMinutes",
}
# Name changes are the point of these cases; the others get a name of their own.
KEEP_NAME = {"name too long", "name upper case"}


@dataclass
class Verdict:
    case: str
    field: str
    kind: str = ""
    name: str = ""
    refused: str = ""  # kubectl's stderr when the apiserver refused


def _slug(case: str) -> str:
    return "bad-" + re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")


def _manifest(case: str, text: str) -> tuple[str, str, str]:
    """The case's text with a name of its own; its kind and name."""
    doc: Any = yaml.safe_load(text)
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        return text, "", ""
    if case not in KEEP_NAME:
        meta["name"] = _slug(case)
    return yaml.safe_dump(doc), str(doc.get("kind", "")), str(meta.get("name", ""))


def _kubectl_apply(control_plane: LocalControlPlane, namespace: str, text: str) -> tuple[int, str]:
    done = subprocess.run(
        [str(control_plane.kubectl), "apply", "--validate=strict", "-n", namespace, "-f", "-"],
        input=text,
        env=control_plane.kubectl_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


async def _operator_verdict(kube: Kube, namespace: str, verdict: Verdict) -> str:
    """The status and the Warning event the operator gave the accepted object."""
    kind = KINDS_BY_NAME[verdict.kind]

    async def read() -> tuple[str, list[str]]:
        body = await kube.get(kind, verdict.name, namespace)
        warnings = [
            e["message"]
            for e in await kube.list(EVENT, namespace)
            if e["involvedObject"]["name"] == verdict.name and e["type"] == "Warning"
        ]
        return json.dumps(body.get("status") or {}), warnings

    status, warnings = await eventually(
        read,
        lambda found: verdict.field in found[0] and any(verdict.field in w for w in found[1]),
        timeout=30,
        what=f"{verdict.kind} {verdict.name}: status and a Warning event naming {verdict.field}",
    )
    return f"status {status[:200]}; event {warnings[0][:200]}"


async def test_the_cluster_judges_every_bad_manifest_and_names_the_field(
    kube: Kube, namespace: str, control_plane: LocalControlPlane
) -> None:
    cases = {case[0]: case[2] for case in CASES}
    assert set(JUDGED) <= set(cases), set(JUDGED) - set(cases)
    verdicts: list[Verdict] = []
    for case, field in JUDGED.items():
        text = cases[case]
        assert isinstance(text, str)
        manifest, kind, name = _manifest(case, text)
        code, output = _kubectl_apply(control_plane, namespace, manifest)
        verdict = Verdict(case, field, kind, name)
        if code != 0:
            assert field in output, f"{case}: kubectl refused without naming {field}: {output}"
            assert "Traceback" not in output
            verdict.refused = output.strip()
        verdicts.append(verdict)
    accepted = [v for v in verdicts if not v.refused]
    judged = await asyncio.gather(*(_operator_verdict(kube, namespace, v) for v in accepted))
    report = [f"{v.case}: apiserver: {v.refused.splitlines()[-1]}" for v in verdicts if v.refused]
    report += [f"{v.case}: operator: {text}" for v, text in zip(accepted, judged, strict=True)]
    print("\n".join(report))
    # Both judges have work: the schema refuses what it can say, the operator the rest.
    assert accepted and len(accepted) < len(verdicts)
