#!/bin/sh
# Checks of the SeedFarmer modules, offline: ruff, mypy --strict (one module at a time: both have
# an app.py), then the synthesis tests. Run from anywhere; uses the repository's .venv.
set -eu
cd "$(dirname "$0")/../.."
PY=.venv/bin
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
$PY/ruff check deploy/aws tests/deploy
for module in ray-operator ray-orchestrator; do
  MYPYPATH="deploy/aws:deploy/aws/modules/$module:src" $PY/mypy --strict --explicit-package-bases \
    deploy/aws/common deploy/aws/modules/$module/*.py
done
$PY/python -m pytest tests/deploy -q "$@"
