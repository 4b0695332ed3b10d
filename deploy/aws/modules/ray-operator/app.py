"""SeedFarmer entry point of the ray-operator module (``cdk deploy --app "python app.py"``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _project_root() -> Path:
    """Where ``deploy/aws/common``, ``charts/`` and the Dockerfile are, in either layout.

    SeedFarmer copies each of a module's ``dataFiles`` to ``module/<its path>`` of the bundle,
    that is inside this directory (seed-farmer's seedfarmer/deployment/deploy_remote.py and
    deploy_local.py: ``f"module/{data_file.get_bundle_path()}"``), and runs the deployspec there;
    in a checkout they are four levels up.
    """
    for candidate in (HERE, *HERE.parents):
        if (candidate / "deploy" / "aws" / "common" / "__init__.py").is_file():
            return candidate
    raise SystemExit(
        f"deploy/aws/common/ is neither in {HERE} (a SeedFarmer bundle) nor above it (a"
        " checkout): list the module's dataFiles as its README shows"
    )


ROOT = _project_root()
sys.path[:0] = [str(HERE), str(ROOT / "deploy" / "aws")]

import aws_cdk as cdk  # noqa: E402
from common.nag import add_aws_solutions_checks  # noqa: E402
from common.parameters import ParameterError  # noqa: E402
from operator_settings import OperatorSettings  # noqa: E402
from operator_stack import build_app  # noqa: E402

CHART_DIR = ROOT / "charts" / "ray-operator"


def main() -> None:
    """Validate the parameters, then synthesize; a bad parameter exits with its name."""
    try:
        settings = OperatorSettings.from_env()
    except ParameterError as error:
        sys.exit(str(error))
    if not (CHART_DIR / "Chart.yaml").is_file():
        sys.exit(f"the operator's Helm chart is missing: {CHART_DIR}/Chart.yaml")
    app = cdk.App()
    build_app(app, settings, root=ROOT, chart_dir=CHART_DIR)
    add_aws_solutions_checks(app)
    app.synth()


if __name__ == "__main__":
    main()
