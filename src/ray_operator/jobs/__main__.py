"""In-cluster entry point of the runner Pod: ``python -m ray_operator.jobs``.

It reads ``RAY_JOB_CONFIGMAP`` (and ``RAY_JOB_NAMESPACE``, ``RAY_JOB_NAME``, the Secret mount
paths) from its environment, runs the job and exits 0 when it SUCCEEDED, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from ray_operator.api.jobdata import ConfigError
from ray_operator.jobs.config import RunnerEnvironment
from ray_operator.jobs.runner import JobRunner
from ray_operator.jobs.status_store import ConfigMapStore
from ray_operator.kube import Kube

log = logging.getLogger("ray_operator.jobs")


async def run_configmap(environment: RunnerEnvironment) -> int:
    """Run the job of one ConfigMap to its end."""
    kube = await Kube.connect(environment.kubeconfig)
    try:
        store = ConfigMapStore(kube, environment.namespace, environment.configmap)
        runner = JobRunner(store, environment.name, environment.namespace, environment)
        return await runner.run()
    finally:
        await kube.close()


def main() -> int:
    """Process entry point."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    try:
        environment = RunnerEnvironment.from_env()
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    try:
        return asyncio.run(run_configmap(environment))
    except Exception as exc:  # the Pod's log must say why it ended, in one line
        log.error("runner failed: %s: %s", type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
