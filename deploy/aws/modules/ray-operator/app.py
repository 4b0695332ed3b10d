"""SeedFarmer entry point of the ray-operator module (``cdk deploy --app "python app.py"``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _project_root() -> Path:
    """The checkout (or SeedFarmer bundle) holding ``deploy/aws/common`` and ``charts/``."""
    for parent in HERE.parents:
        if (parent / "deploy" / "aws" / "common" / "__init__.py").is_file():
            return parent
    raise SystemExit(f"deploy/aws/common/ not found above {HERE}: see this module's README")


ROOT = _project_root()
sys.path[:0] = [str(HERE), str(ROOT / "deploy" / "aws")]

import aws_cdk as cdk  # noqa: E402
from common.nag import add_aws_solutions_checks  # noqa: E402
from common.parameters import ParameterError  # noqa: E402
from operator_settings import OperatorSettings  # noqa: E402
from operator_stack import RayOperatorStack  # noqa: E402

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
    RayOperatorStack(
        app,
        settings.context.stack_name,
        settings=settings,
        chart_dir=CHART_DIR,
        env=cdk.Environment(account=settings.context.account, region=settings.context.region),
        description="Ray operator (this project's Helm chart) with an IRSA service account",
    )
    add_aws_solutions_checks(app)
    app.synth()


if __name__ == "__main__":
    main()
