"""Pure builders of a RayJob's children: ConfigMap, runner Pod, ServiceAccount, Role, RoleBinding.

The Role lets the runner read and update its own ConfigMap and nothing else (resourceNames).
"""

from __future__ import annotations

import json
from typing import Any, Final

from ray_operator.api.constants import API_VERSION, LABEL_MANAGED_BY, LABEL_RAYJOB, MANAGED_BY
from ray_operator.api.jobdata import KEY_ID, STATUS_JOB, STATUS_START_TIME, STATUS_SUBMIT_TIME
from ray_operator.api.rayjob import RayJobSpec
from ray_operator.api.validation import MAX_NAME_LENGTH, validate_ray
from ray_operator.builders.ray_cluster import AUTH_TOKEN_KEY, auth_secret_name
from ray_operator.builders.rayjob_status import MIRRORED, job_address

Obj = dict[str, Any]

S3_MOUNT: Final = "/etc/ray-job/s3"
TOKEN_MOUNT: Final = "/etc/ray-job/ray"
# spec.scriptFrom's ConfigMap key, mounted by the kubelet: the operator never reads the script.
SCRIPT_FROM_MOUNT: Final = "/etc/ray-job/script"
SCRIPT_FROM_VOLUME: Final = "script-from"
# The user and group of the project's image (Dockerfile: useradd --uid 10001).
RUNNER_UID: Final = 10001
# Beyond a job's activeDeadlineSeconds, for the runner to stop the job and upload its log.
UPLOAD_MARGIN_SECONDS: Final = 300


def child_name(job: str) -> str:
    """The name shared by every child of RayJob ``job``."""
    return f"{job}-rayjob"


def job_cluster_name(job: str) -> str:
    """The name of the Ray a RayJob with ``spec.clusterSpec`` brings."""
    return f"{job}-ray"


def job_cluster_error(job: str) -> str | None:
    """Why ``job`` cannot name a Ray of its own, if it cannot."""
    name = job_cluster_name(job)
    if len(name) > MAX_NAME_LENGTH:
        return (
            f"metadata.name={job!r}: with spec.clusterSpec the job's Ray is named {name!r}, "
            f"longer than a Ray's {MAX_NAME_LENGTH} characters; use a name of at most "
            f"{MAX_NAME_LENGTH - len(job_cluster_name(''))} characters"
        )
    return None


def judge_job_cluster(job: str, spec: RayJobSpec) -> tuple[list[str], list[str]]:
    """Errors and unknown fields of the Ray ``spec.clusterSpec`` would make, named as given."""
    error = job_cluster_error(job)
    if error is not None:
        return [error], []
    report = validate_ray(build_job_cluster(job, "", "default", spec))

    def given(text: str) -> str:
        return text.replace("spec.", "spec.clusterSpec.", 1)

    return [given(str(p)) for p in report.errors], [given(f) for f in report.unknown_fields]


def on_own_cluster(job: str, spec: RayJobSpec) -> RayJobSpec:
    """The spec as the rest reads it: a job with ``clusterSpec`` names its own Ray."""
    if spec.clusterSpec is None:
        return spec
    return spec.model_copy(update={"cluster": job_cluster_name(job)})


def with_cluster_token(spec: RayJobSpec, ray: Obj | None) -> RayJobSpec:
    """A job on a Ray with ``spec.auth`` uses that Ray's token Secret (unless it names one)."""
    if spec.tokenSecretName or not spec.cluster:
        return spec
    if spec.clusterSpec is not None:
        auth = spec.clusterSpec.auth is not None
    else:
        auth = bool(((ray or {}).get("spec") or {}).get("auth"))
    if not auth:
        return spec
    return spec.model_copy(update={"tokenSecretName": auth_secret_name(spec.cluster)})


def build_job_cluster(job: str, uid: str, namespace: str, spec: RayJobSpec) -> Obj:
    """The Ray of ``spec.clusterSpec``, owned by the RayJob (deleting the job deletes it)."""
    assert spec.clusterSpec is not None
    meta = _meta(job, uid, job_cluster_name(job))
    meta["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "Ray",
        "metadata": meta,
        "spec": spec.clusterSpec.model_dump(exclude_none=True, by_alias=True),
    }


def _meta(job: str, uid: str, name: str | None = None) -> Obj:
    return {
        "name": name or child_name(job),
        "labels": {LABEL_RAYJOB: job, LABEL_MANAGED_BY: MANAGED_BY},
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "RayJob",
                "name": job,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def build_configmap_data(spec: RayJobSpec, address: str) -> dict[str, str]:
    """The runner's ConfigMap data, in the original ray-pod's keys."""
    script, location = spec.script, spec.scriptLocation
    if spec.scriptFrom is not None:
        script = f"{SCRIPT_FROM_MOUNT}/{spec.scriptFrom.configMapKeyRef.key}"
        location = "file"
    data = {
        "resourceURL": address,
        "jobdata.jobScript": script,
        "jobdata.scriptLocation": location,
        "jobdata.scriptExtraLocation": "inline",
        "updateInterval": f"{spec.updateInterval:g}",
        "kill": "true" if spec.kill else "false",
    }
    if spec.parameters:
        data["jobdata.jobParameters"] = json.dumps(spec.parameters, ensure_ascii=False)
    if spec.runtimeEnv:
        data["jobdata.scriptMetadata"] = spec.runtimeEnv.model_dump_json(exclude_none=True)
    if spec.s3:
        data["s3.endpoint"] = spec.s3.endpoint or ""
        data["s3.secure"] = "true" if spec.s3.secure else "false"
        data["s3.secret"] = spec.s3.secretName or ""
    if spec.uploadBucket:
        data["s3upload.bucket"] = spec.uploadBucket
    if spec.uploadFiles:
        data["s3upload.files"] = ",".join(spec.uploadFiles)
    if spec.activeDeadlineSeconds:
        data["activeDeadlineSeconds"] = str(spec.activeDeadlineSeconds)
    if spec.tokenSecretName:
        data["resourcesecret"] = spec.tokenSecretName
    return data


def build_configmap(job: str, uid: str, spec: RayJobSpec, address: str) -> Obj:
    """The ConfigMap the runner reads its job from and writes status to."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(job, uid),
        "data": build_configmap_data(spec, address),
    }


def build_service_account(job: str, uid: str) -> Obj:
    """The runner's identity."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(job, uid)}


def build_role(job: str, uid: str) -> Obj:
    """Read and update this job's ConfigMap only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(job, uid),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [child_name(job)],
                "verbs": ["get", "update", "patch"],
            }
        ],
    }


def runner_account(job: str, spec: RayJobSpec) -> str:
    """The ServiceAccount the runner runs as: the user's (IRSA) or the job's own."""
    return spec.serviceAccountName or child_name(job)


def build_role_binding(job: str, uid: str, namespace: str, account: str | None = None) -> Obj:
    """Bind the Role to the runner's ServiceAccount (``account``: an existing one)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(job, uid),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": child_name(job),
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": account or child_name(job), "namespace": namespace}
        ],
    }


def build_runner_pod(
    job: str, uid: str, spec: RayJobSpec, image: str, pull_secrets: tuple[str, ...] = ()
) -> Obj:
    """The Pod that runs ``python -m ray_operator.jobs`` for this job.

    ``restartPolicy: Never``: its exit code is the job's result (1 must not crash-loop); a runner
    Pod that is lost is recreated by the controller and resumes the same submission id.
    """
    name = child_name(job)
    env = [
        {"name": "RAY_JOB_CONFIGMAP", "value": name},
        {"name": "RAY_JOB_NAME", "value": job},
        {
            "name": "RAY_JOB_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "RAY_JOB_S3_CREDENTIALS_DIR", "value": S3_MOUNT},
        {"name": "RAY_JOB_RAY_TOKEN_FILE", "value": f"{TOKEN_MOUNT}/{AUTH_TOKEN_KEY}"},
    ]
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    if spec.s3 and spec.s3.secretName:
        volumes.append({"name": "s3", "secret": {"secretName": spec.s3.secretName}})
        mounts.append({"name": "s3", "mountPath": S3_MOUNT, "readOnly": True})
    if spec.tokenSecretName:
        volumes.append({"name": "ray-token", "secret": {"secretName": spec.tokenSecretName}})
        mounts.append({"name": "ray-token", "mountPath": TOKEN_MOUNT, "readOnly": True})
    if spec.scriptFrom is not None:
        ref = spec.scriptFrom.configMapKeyRef
        volumes.append(
            {
                "name": SCRIPT_FROM_VOLUME,
                "configMap": {"name": ref.name, "items": [{"key": ref.key, "path": ref.key}]},
            }
        )
        mounts.append(
            {"name": SCRIPT_FROM_VOLUME, "mountPath": SCRIPT_FROM_MOUNT, "readOnly": True}
        )
    container: Obj = {
        "name": "runner",
        "image": spec.runnerImage or image,
        "command": ["python", "-m", "ray_operator.jobs"],
        "env": env,
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "192Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(job, uid),
        "spec": {
            "serviceAccountName": runner_account(job, spec),
            "restartPolicy": "Never",
            # Pod Security "restricted": the project image's numeric user (its Dockerfile), so
            # that a kubelet can verify runAsNonRoot without reading the image's /etc/passwd.
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUNNER_UID,
                "runAsGroup": RUNNER_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        },
    }
    if pull_secrets:
        pod["spec"]["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    if spec.activeDeadlineSeconds:
        # The job's deadline, plus time for the runner to stop it and upload its log: a runner
        # stuck Pending or pulling its image still ends, and the RayJob says why.
        pod["spec"]["activeDeadlineSeconds"] = spec.activeDeadlineSeconds + UPLOAD_MARGIN_SECONDS
    if spec.runnerTemplate is not None:
        _merge_template(pod, spec)
    return pod


def _merge_template(pod: Obj, spec: RayJobSpec) -> None:
    """Add the user's runnerTemplate (checked by ``check_spec``: nothing of the runner's own)."""
    template = spec.runnerTemplate
    assert template is not None
    if template.metadata is not None:
        meta = pod["metadata"]
        if template.metadata.labels:
            meta["labels"] = {**template.metadata.labels, **meta["labels"]}
        if template.metadata.annotations:
            meta["annotations"] = dict(template.metadata.annotations)
    given = template.spec
    if given is None:
        return
    pod_spec = pod["spec"]
    for field in ("nodeSelector", "tolerations", "affinity", "priorityClassName",
                  "imagePullSecrets"):
        value = getattr(given, field)
        if value is not None:
            pod_spec[field] = value
    if given.volumes:
        pod_spec["volumes"] = [*pod_spec["volumes"], *given.volumes]
    for shaped in given.containers or []:
        (container,) = pod_spec["containers"]
        if shaped.resources is not None:
            container["resources"] = shaped.resources
        if shaped.env:
            container["env"] = [*container["env"], *shaped.env]
        if shaped.volumeMounts:
            container["volumeMounts"] = [*container.get("volumeMounts", []), *shaped.volumeMounts]


def build_rayjob_children(
    job: str,
    uid: str,
    namespace: str,
    spec: RayJobSpec,
    runner_image: str,
    submission_id: str | None,
    status: Obj,
    pull_secrets: tuple[str, ...] = (),
) -> list[Obj]:
    """Every child of a RayJob, in the order they are created (the Pod last).

    ``submission_id`` is the id chosen for the job (None offline, when none is chosen yet); a
    ConfigMap made again after a loss carries the runner's progress as last mirrored in
    ``status`` (its submit time above all), so the new runner follows the job instead of
    submitting it again. Messages are not copied: they may be the controller's own notes.
    """
    configmap = build_configmap(job, uid, spec, job_address(spec, namespace))
    if submission_id:
        configmap["data"][KEY_ID] = submission_id
    if status.get("submitTime"):
        for cm_key in (STATUS_JOB, STATUS_SUBMIT_TIME, STATUS_START_TIME):
            if status.get(MIRRORED[cm_key]):
                configmap["data"][cm_key] = str(status[MIRRORED[cm_key]])
    account = [] if spec.serviceAccountName else [build_service_account(job, uid)]
    return [
        *account,
        build_role(job, uid),
        build_role_binding(job, uid, namespace, runner_account(job, spec)),
        configmap,
        build_runner_pod(job, uid, spec, runner_image, pull_secrets),
    ]
