"""Ray's autoscaler for one ``Ray`` of ray-operator: an external node provider, and the process.

This file runs in the cluster's own Ray image, from the ConfigMap ``{name}-autoscaler`` (as
``ray_operator_autoscaler.py``), so it uses the standard library and Ray only: no project
import. The process waits for the head's GCS, then runs Ray's autoscaler (version 2) with
:class:`RayNodeProvider`, which knows Kubernetes through one object, its ``Ray``:

- the nodes are the pods the operator lists in ``status.autoscaling.nodes`` (name, Ray node
  type, state), less those already named for removal;
- a launch raises a group's ``replicas``; a termination lowers it and names the pod in the
  group's ``scaleStrategy.workersToDelete``, which the operator then removes, exactly those;
- requests no group can serve go to the annotation ``ray.kubeflow.org/autoscaler-infeasible``,
  which the operator shows as a condition and an event.

Its ServiceAccount may ``get`` and ``patch`` that ``Ray``, nothing else. Writes are JSON patches
that first test the ``resourceVersion`` read, so a concurrent change (``kubectl scale``, the
operator's defaults) is read again, never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from ray.autoscaler.node_provider import NodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    STATUS_UPDATE_FAILED,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

log = logging.getLogger("ray_operator_autoscaler")
Obj = dict[str, Any]

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
GROUP_VERSION = "ray.kubeflow.org/v1"
ANNOTATION_INFEASIBLE = "ray.kubeflow.org/autoscaler-infeasible"
# The last launch or removal asked for: the operator's ScaledUp/ScaledDown events give it.
ANNOTATION_REQUEST = "ray.kubeflow.org/autoscaler-request"
FIELD_MANAGER = "ray-autoscaler"
HEAD_TYPE = "head"
WORKER_TYPE = "worker"
ATTEMPTS = 8
# What the operator's Deployment gives this process (builders.autoscaling).
ENV_GCS_ADDRESS = "RAY_OPERATOR_GCS_ADDRESS"
ENV_RAY_NAME = "RAY_OPERATOR_RAY"
ENV_NAMESPACE = "RAY_OPERATOR_NAMESPACE"
ENV_CONFIG = "RAY_OPERATOR_AUTOSCALING_CONFIG"
ENV_POD_IP = "RAY_OPERATOR_POD_IP"


class KubeError(Exception):
    """An answer of the apiserver other than success."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class KubeApi:
    """The apiserver, with this pod's ServiceAccount token (read anew: it is rotated)."""

    def __init__(self, directory: str = SERVICE_ACCOUNT) -> None:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        self.base = f"https://{host}:{port}"
        self.directory = directory
        self.context = ssl.create_default_context(cafile=os.path.join(directory, "ca.crt"))
        # No proxy: the apiserver is inside the cluster.
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.context)
        )

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> Obj:
        """One request; the decoded answer, or :class:`KubeError`."""
        with open(os.path.join(self.directory, "token")) as f:
            token = f.read().strip()
        data = json.dumps(body).encode() if body is not None else None
        if method == "PATCH":
            path += f"?fieldManager={FIELD_MANAGER}"
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with self.opener.open(request, timeout=15) as answer:
                found: Obj = json.loads(answer.read() or b"{}")
                return found
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                text = json.loads(text).get("message", text)
            except ValueError:
                pass
            raise KubeError(exc.code, text) from None


def ray_path(namespace: str, name: str) -> str:
    """The URL path of one ``Ray``."""
    return f"/apis/{GROUP_VERSION}/namespaces/{namespace}/rays/{name}"


def group_specs(ray: Obj) -> dict[str, tuple[str, Obj]]:
    """Ray node type -> (JSON pointer of its spec, the spec): worker, worker-<group>."""
    spec = ray.get("spec") or {}
    found = {WORKER_TYPE: ("/spec/worker", spec.get("worker") or {})}
    for index, group in enumerate(spec.get("workerGroups") or []):
        found[f"worker-{group.get('name')}"] = (f"/spec/workerGroups/{index}", group)
    return found


def named_for_removal(ray: Obj) -> set[str]:
    """Every pod some group's ``scaleStrategy.workersToDelete`` names."""
    return {
        str(name)
        for _, spec in group_specs(ray).values()
        for name in (spec.get("scaleStrategy") or {}).get("workersToDelete") or []
    }


def listed_nodes(ray: Obj) -> list[Obj] | None:
    """The pods the operator lists for the autoscaler.

    None before it lists any (a new Ray, or one whose spec it cannot read now): unknown, which
    is not "no pod".
    """
    shown = (ray.get("status") or {}).get("autoscaling")
    if not isinstance(shown, dict):
        return None
    return list(shown.get("nodes") or [])


def scale_patch(ray: Obj, launch: dict[str, int], remove: list[str]) -> list[Obj]:
    """The JSON patch that launches and removes, given the ``Ray`` as read ([]: nothing to do).

    A group's count starts from the most of its ``replicas``, ``minReplicas`` and its pods not
    being removed (a hand-lowered count waits for pods to be named, as the operator holds it),
    stays within ``maxReplicas``, and each removal names its pod. Names of pods that are gone
    leave the list.
    """
    listed = listed_nodes(ray)
    nodes = {str(n.get("pod")): n for n in listed or []}
    pending = named_for_removal(ray)
    observed = Counter(
        str(n.get("type")) for name, n in nodes.items()
        if name not in pending and n.get("type") != HEAD_TYPE
    )
    ops: list[Obj] = []
    removing: list[str] = []
    for node_type, (pointer, spec) in group_specs(ray).items():
        replicas = spec.get("replicas")
        low = int(spec.get("minReplicas") or 0)
        high = spec.get("maxReplicas")
        count = max(int(replicas or 0), low, observed[node_type]) + launch.get(node_type, 0)
        chosen = [
            name for name in remove
            if name in nodes and name not in pending and nodes[name].get("type") == node_type
        ]
        removing += chosen
        count = max(count - len(chosen), 0)
        if high is not None:
            count = min(count, int(high))
        named = list((spec.get("scaleStrategy") or {}).get("workersToDelete") or [])
        # A name leaves once its pod is gone from the list (never while the list is unknown).
        keep = [name for name in named if listed is None or name in nodes] + chosen
        if count != replicas:
            ops.append({"op": "add", "path": f"{pointer}/replicas", "value": count})
        if keep != named:
            ops.append({"op": "add", "path": f"{pointer}/scaleStrategy",
                        "value": {"workersToDelete": keep}})
    asked = {"launch": {t: n for t, n in launch.items() if n}, "remove": sorted(removing)}
    if ops and (asked["launch"] or asked["remove"]):
        ops.append(_annotation_op(ray, ANNOTATION_REQUEST, json.dumps(asked, sort_keys=True)))
    return ops


def _annotation_op(ray: Obj, key: str, value: str) -> Obj:
    """A JSON patch op that sets one annotation (the map made when there is none)."""
    if not (ray.get("metadata") or {}).get("annotations"):
        return {"op": "add", "path": "/metadata/annotations", "value": {key: value}}
    escaped = key.replace("~", "~0").replace("/", "~1")
    return {"op": "add", "path": f"/metadata/annotations/{escaped}", "value": value}


class RayNodeProvider(NodeProvider):
    """Ray's node provider interface over one ``Ray`` of ray-operator."""

    def __init__(self, provider_config: Obj, cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self.path = ray_path(provider_config["namespace"], provider_config["ray"])
        self.kube = KubeApi()
        self.nodes: dict[str, Obj] = {}
        # Launches and terminations arrive from Ray's worker threads: one write at a time.
        self.lock = threading.Lock()

    # --- reading ----------------------------------------------------------------------------
    def _read(self) -> Obj:
        ray = self.kube.request("GET", self.path)
        listed = listed_nodes(ray)
        if listed is not None:  # else: the pods as last known
            pending = named_for_removal(ray)
            self.nodes = {str(n["pod"]): n for n in listed if n.get("pod") not in pending}
        return ray

    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        """Pods of the cluster not named for removal (names of pods gone are dropped)."""
        ray = self._read()
        listed = listed_nodes(ray)
        if listed is not None and named_for_removal(ray) - {str(n.get("pod")) for n in listed}:
            self._scale({}, [])
        return [
            name for name in self.nodes
            if all(self.node_tags(name).get(k) == v for k, v in tag_filters.items())
        ]

    def is_running(self, node_id: str) -> bool:
        """Whether the pod runs."""
        return bool(self.nodes.get(node_id, {}).get("state") == "running")

    def is_terminated(self, node_id: str) -> bool:
        """Whether the pod is gone, or named for removal."""
        return node_id not in self.nodes

    def node_tags(self, node_id: str) -> dict[str, str]:
        """Kind, Ray node type and status of a pod."""
        # A launch thread may have read the Ray anew meanwhile: a pod gone is a pending worker.
        node = self.nodes.get(node_id) or {"type": WORKER_TYPE}
        state = node.get("state")
        return {
            TAG_RAY_NODE_KIND: NODE_KIND_HEAD if node.get("type") == HEAD_TYPE
            else NODE_KIND_WORKER,
            TAG_RAY_USER_NODE_TYPE: str(node.get("type")),
            TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE if state == "running"
            else STATUS_UPDATE_FAILED if state == "failed" else "pending",
        }

    def internal_ip(self, node_id: str) -> str:
        """The pod's address ("" before it has one)."""
        return str(self.nodes.get(node_id, {}).get("ip") or "")

    def external_ip(self, node_id: str) -> str:
        """The pod's address (pods have no other)."""
        return self.internal_ip(node_id)

    # --- writing ----------------------------------------------------------------------------
    def create_node(self, node_config: Obj, tags: dict[str, str], count: int) -> Obj | None:
        """``count`` more workers of a group."""
        self._scale({tags[TAG_RAY_USER_NODE_TYPE]: count}, [])
        return None

    def terminate_node(self, node_id: str) -> Obj | None:
        """Remove one drained worker."""
        self._scale({}, [node_id])
        return None

    def terminate_nodes(self, node_ids: list[str]) -> Obj | None:
        """Remove drained workers."""
        self._scale({}, list(node_ids))
        return None

    def _scale(self, launch: dict[str, int], remove: list[str]) -> None:
        with self.lock:
            for _ in range(ATTEMPTS):
                ray = self._read()
                ops = scale_patch(ray, launch, remove)
                if not ops:
                    return
                version = ray["metadata"]["resourceVersion"]
                test = {"op": "test", "path": "/metadata/resourceVersion", "value": version}
                try:
                    self.kube.request("PATCH", self.path, [test, *ops],
                                      "application/json-patch+json")
                except KubeError as exc:
                    if exc.status in (409, 422):  # changed since it was read: read it again
                        continue
                    raise
                log.info("scaled %s: launch %s, remove %s", self.path, launch, remove)
                return
            raise RuntimeError(f"{self.path} kept changing: gave up after {ATTEMPTS} writes")


def infeasible(state: Any) -> list[Obj]:
    """What Ray asks for that no group can serve, from an AutoscalingState, counted by shape."""
    shapes: Counter[str] = Counter()
    for request in state.infeasible_resource_requests:
        shapes[json.dumps({"resources": dict(request.resources_bundle), "kind": "task or actor"},
                          sort_keys=True)] += 1
    for gang in state.infeasible_gang_resource_requests:
        bundles = [dict(r.resources_bundle) for r in gang.requests]
        shapes[json.dumps({"resources": bundles, "kind": "placement group"},
                          sort_keys=True)] += 1
    for constraint in state.infeasible_cluster_resource_constraints:
        for item in constraint.resource_requests:
            shapes[json.dumps({"resources": dict(item.request.resources_bundle),
                               "kind": "request_resources"}, sort_keys=True)] += item.count
    return [{**json.loads(shape), "count": n} for shape, n in sorted(shapes.items())]


def report_infeasible(kube: KubeApi, path: str, found: list[Obj], shown: str | None) -> str | None:
    """Write what is infeasible on the ``Ray`` when it changed; what is shown now."""
    text = json.dumps(found, sort_keys=True) if found else None
    if text != shown:
        patch = {"metadata": {"annotations": {ANNOTATION_INFEASIBLE: text}}}
        kube.request("PATCH", path, patch, "application/merge-patch+json")
        log.info("infeasible requests: %s", text or "none")
    return text


def wait_for_gcs(address: str) -> None:
    """Until the head's GCS answers (Ray's own check, as KubeRay's autoscaler does)."""
    while True:
        check = ["ray", "health-check", "--address", address, "--skip-version-check"]
        if subprocess.run(check, capture_output=True).returncode == 0:
            return
        log.info("waiting for the GCS at %s", address)
        time.sleep(5)


def main() -> None:
    """Run Ray's autoscaler for this pod's ``Ray`` until the process is stopped."""
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Ray fills the launcher's legacy fields into an external provider's config and then warns,
    # every update, that it dropped them: nothing this config can change.
    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.ERROR)
    from ray._private.services import canonicalize_bootstrap_address_or_die
    from ray._raylet import GcsClient  # type: ignore[attr-defined]
    from ray.autoscaler._private.constants import AUTOSCALER_UPDATE_INTERVAL_S
    from ray.autoscaler.v2.instance_manager.config import FileConfigReader
    from ray.autoscaler.v2.monitor import AutoscalerMonitor

    wait_for_gcs(os.environ[ENV_GCS_ADDRESS])
    address = canonicalize_bootstrap_address_or_die(os.environ[ENV_GCS_ADDRESS])
    monitor = AutoscalerMonitor(
        address=address,
        config_reader=FileConfigReader(os.environ[ENV_CONFIG], skip_content_hash=True),
        log_dir=None,
        monitor_ip=os.environ.get(ENV_POD_IP) or None,
    )
    gcs = GcsClient(address=address)
    kube = KubeApi()
    path = ray_path(os.environ[ENV_NAMESPACE], os.environ[ENV_RAY_NAME])
    annotations = (kube.request("GET", path).get("metadata") or {}).get("annotations") or {}
    shown = annotations.get(ANNOTATION_INFEASIBLE) or None
    log.info("autoscaling %s through the GCS at %s", path, address)
    autoscaler = monitor.autoscaler
    assert autoscaler is not None
    while True:
        state = autoscaler.update_autoscaling_state()
        if state is not None:
            gcs.report_autoscaling_state(state.SerializeToString())
            try:
                shown = report_infeasible(kube, path, infeasible(state), shown)
            except (KubeError, OSError) as exc:  # the apiserver away a moment: next round
                log.warning("could not report infeasible requests on %s: %s", path, exc)
        time.sleep(AUTOSCALER_UPDATE_INTERVAL_S)


if __name__ == "__main__":
    main()
