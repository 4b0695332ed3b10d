"""``ray-operator run``: connect, build the shared caches and the controllers, run until stopped."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket

from ray_operator import __version__
from ray_operator.api.constants import (
    LABEL_AUTOSCALING,
    LABEL_MANAGED_BY,
    LABEL_RAYJOB,
    MANAGED_BY,
)
from ray_operator.api.pod_fields import OPENAPI_V3_CORE, FieldTable, extract_pod_fields
from ray_operator.controllers.ray import CHILD_SELECTOR, RayController
from ray_operator.controllers.rayjob import CHILD_KINDS, RayJobController
from ray_operator.controllers.raypipeline import PipelineController
from ray_operator.kube import (
    DEPLOYMENT,
    JOB,
    NETWORK_POLICY,
    POD,
    RAY,
    RAYJOB,
    RAYPIPELINE,
    SECRET,
    SERVICE,
    Kube,
    KubeError,
    KubeTransportError,
)
from ray_operator.runtime.events import EventRecorder
from ray_operator.runtime.manager import LeaseOptions, Manager
from ray_operator.runtime.slim import slim_pod
from ray_operator.settings import Settings

log = logging.getLogger(__name__)
# Objects the operator made (Ray and RayJob children alike carry this label).
OWN = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
# The pods of autoscaled clusters (the Ray controller gates and lists them for the autoscaler).
AUTOSCALED_PODS = f"{OWN},{LABEL_AUTOSCALING}=true"


async def read_field_table(kube: Kube) -> FieldTable | None:
    """The pod template fields this apiserver knows, from its OpenAPI v3; None if unreadable."""
    try:
        table = extract_pod_fields(await kube.request("GET", OPENAPI_V3_CORE))
    except (KubeError, KubeTransportError, KeyError, ValueError) as exc:
        log.warning(
            "cannot read %s (%s): pod templates are checked against the fields of the "
            "Kubernetes version this operator was tested with",
            OPENAPI_V3_CORE,
            exc,
        )
        return None
    log.info("pod template fields from the apiserver: %d types", len(table))
    return table


def build_manager(kube: Kube, settings: Settings, fields: FieldTable | None) -> Manager:
    """The manager with its caches and the three controllers wired to them."""
    lease = None
    if settings.leader_election and settings.leader_election_namespace:
        identity = settings.leader_election_identity or (
            f"{socket.gethostname()}_{secrets.token_hex(4)}"
        )
        lease = LeaseOptions(
            settings.leader_election_namespace, settings.leader_election_id, identity
        )
    manager = Manager(
        kube,
        namespaces=settings.namespaces,
        resync_seconds=settings.resync_seconds,
        metrics_port=settings.metrics_port,
        lease=lease,
    )
    events = EventRecorder(kube)
    rays = manager.informer(RAY)
    # Kinds both the Ray and the RayJob controllers make (the autoscaler's identity and config,
    # the runner's): one cache each, of the operator's own objects. Pods: the runners' here;
    # the Ray controller's (autoscaled clusters') are listed only once such a cluster exists,
    # so that every Ray pod of the cluster never reaches the process.
    shared = {
        name: manager.informer(kind, OWN) for name, kind in CHILD_KINDS.items() if kind is not POD
    }
    shared["Pod"] = manager.informer(POD, LABEL_RAYJOB, transform=slim_pod)
    jobs = manager.informer(RAYJOB)
    manager.add(
        RayController(
            kube,
            settings,
            events,
            rays,
            deployments=manager.informer(DEPLOYMENT, CHILD_SELECTOR),
            services=manager.informer(SERVICE, CHILD_SELECTOR),
            secrets=manager.informer(SECRET, CHILD_SELECTOR, metadata_only=True),
            network_policies=manager.informer(NETWORK_POLICY, CHILD_SELECTOR),
            jobs=manager.informer(JOB, CHILD_SELECTOR),
            configmaps=shared["ConfigMap"],
            service_accounts=shared["ServiceAccount"],
            roles=shared["Role"],
            role_bindings=shared["RoleBinding"],
            pods=manager.informer(POD, AUTOSCALED_PODS, transform=slim_pod, on_demand=True),
            fields=fields,
        )
    )
    children = {name: shared[name] for name in CHILD_KINDS}
    manager.add(RayJobController(kube, settings, events, jobs, rays, children))
    manager.add(
        PipelineController(kube, settings, events, manager.informer(RAYPIPELINE), jobs, rays)
    )
    return manager


async def run_operator(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; the exit status (1: the leader Lease was lost)."""
    kube = await Kube.connect(settings.kubeconfig, settings.context)
    kube.user_agent = (
        f"ray-operator/{__version__} ({settings.leader_election_identity or socket.gethostname()})"
    )
    try:
        fields = await read_field_table(kube)
        manager = build_manager(kube, settings, fields)
        if manager.lease is None:
            log.info(
                "leader election off%s: run one operator only",
                "" if settings.leader_election else " (RAY_OPERATOR_LEADER_ELECTION=false)",
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "watching %s as pid %d",
            ", ".join(settings.namespaces) or "every namespace",
            os.getpid(),
        )
        return await manager.run(stop)
    finally:
        await kube.close()
