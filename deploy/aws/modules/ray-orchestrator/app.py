"""SeedFarmer entry point of the ray-orchestrator module (``cdk deploy --app "python app.py"``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _project_root() -> Path:
    """The checkout (or SeedFarmer bundle) holding ``deploy/aws/common``, ``src/`` and examples."""
    for parent in HERE.parents:
        if (parent / "deploy" / "aws" / "common" / "__init__.py").is_file():
            return parent
    raise SystemExit(f"deploy/aws/common/ not found above {HERE}: see this module's README")


ROOT = _project_root()
sys.path[:0] = [str(HERE), str(ROOT / "deploy" / "aws")]
if importlib.util.find_spec("ray_operator") is None:  # not installed: use the checkout's source
    sys.path.insert(0, str(ROOT / "src"))

import aws_cdk as cdk  # noqa: E402
from common.nag import add_aws_solutions_checks  # noqa: E402
from common.parameters import ParameterError  # noqa: E402
from orchestrator_settings import OrchestratorSettings  # noqa: E402
from orchestrator_stack import RayOrchestratorStack  # noqa: E402


def main() -> None:
    """Validate the parameters (and the pipeline file), then synthesize."""
    try:
        settings = OrchestratorSettings.from_env(ROOT)
    except ParameterError as error:
        sys.exit(str(error))
    app = cdk.App()
    RayOrchestratorStack(
        app,
        settings.context.stack_name,
        settings=settings,
        env=cdk.Environment(account=settings.context.account, region=settings.context.region),
        description=f"Ray pipeline {settings.pipeline.name} as a Step Functions state machine",
    )
    add_aws_solutions_checks(app)
    app.synth()


if __name__ == "__main__":
    main()
