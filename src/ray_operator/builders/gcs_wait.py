"""Workers that wait for the head's GCS before ``ray start`` (builder revision 3 onward).

A worker pod started beside a new head runs ``ray start --address`` before the GCS answers,
exits, and the kubelet restarts it with a growing back-off: on the demo the three workers
restarted twice each and the cluster was whole 80 s after its head was ready. An init container
holds each worker until the head answers on its readiness endpoint (``/api/gcs_healthz`` on the
dashboard port), or, when the head exposes no dashboard, until ``ray health-check`` reaches its
GCS (as KubeRay's wait-gcs-ready does); ``ray start`` then runs once. It is added to every
worker template (the default one and the user's), with the image, resources and security
context of the worker's first container, so it needs nothing the pod does not already have and
passes whatever admission the worker passes.

A GCS on another port, or an image without ``ray``, must not hold a worker forever: after
``GIVE_UP_SECONDS`` the init container lets the worker start as it did before.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from ray_operator.api.constants import ENV_HEAD_SERVICE, PORT_GCS
from ray_operator.builders.default_templates import WORKER_CONTAINER

Obj = dict[str, Any]

WAIT_CONTAINER: Final = "wait-gcs"
GIVE_UP_SECONDS: Final = 300
POLL_SECONDS: Final = 2
# Python, not sh: a kubelet reads "$(...)" in a command as a variable reference. Both checks
# stop after GIVE_UP_SECONDS and let the worker start as it did before.
_LOOP: Final = f"""\
import os, subprocess, sys, time, urllib.request
head = os.environ["{ENV_HEAD_SERVICE}"]
give_up = time.monotonic() + {GIVE_UP_SECONDS}
while not answers():
    if time.monotonic() > give_up:
        print(f"no answer from {{what}} after {GIVE_UP_SECONDS} s: starting the worker anyway")
        sys.exit(0)
    print(f"waiting for {{what}}", flush=True)
    time.sleep({POLL_SECONDS})
print(f"{{what}} answers")
"""
# With the dashboard port exposed: the head's own readiness endpoint, polled over HTTP (no
# Python process importing Ray every 2 s beside a starting head on the same cores).
_BY_DASHBOARD: Final = """\
def answers():
    try:
        # No proxy: a cluster's HTTP_PROXY is for the outside world.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{head}:%d/api/gcs_healthz", timeout=2) as r:
            return r.status == 200
    except Exception:  # refused, reset, not HTTP: not ready yet
        return False
what = "the head's GCS (through its dashboard)"
"""
# Without it: Ray's own check of the GCS, as KubeRay's wait-gcs-ready does.
_BY_GCS: Final = f"""\
def answers():
    check = ["ray", "health-check", "--address", f"{{head}}:{PORT_GCS}"]
    try:
        return subprocess.run(check, capture_output=True).returncode == 0
    except OSError:  # no ray in this image: wait out the time, then let the worker start
        return False
what = "the head's GCS"
"""


def wait_script(dashboard_port: int | None) -> str:
    """The init container's Python program."""
    check = _BY_DASHBOARD % dashboard_port if dashboard_port else _BY_GCS
    head, loop = _LOOP.split("give_up =", 1)
    return f"{head}{check}give_up ={loop}"


# What the wait container takes over from the worker container.
_COPIED: Final = ("image", "imagePullPolicy", "resources", "securityContext")


def with_gcs_wait(template: Obj, head_service: str, dashboard_port: int | None) -> Obj:
    """``template`` with the ``wait-gcs`` init container last among its init containers.

    Unchanged when it has one of that name already, or no container to copy from.
    """
    spec = template.get("spec") or {}
    containers = spec.get("containers") or []
    init = spec.get("initContainers") or []
    if not containers or any(c.get("name") == WAIT_CONTAINER for c in init):
        return template
    # The Ray container (the default template's name), else the first: not a sidecar's image.
    worker = next((c for c in containers if c.get("name") == WORKER_CONTAINER), containers[0])
    wait: Obj = {"name": WAIT_CONTAINER}
    wait.update({key: copy.deepcopy(worker[key]) for key in _COPIED if key in worker})
    wait["command"] = ["python", "-c", wait_script(dashboard_port)]
    wait["env"] = [{"name": ENV_HEAD_SERVICE, "value": head_service}]
    result = copy.deepcopy(template)
    result["spec"]["initContainers"] = [*copy.deepcopy(init), wait]
    return result
