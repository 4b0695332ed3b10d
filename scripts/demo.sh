#!/usr/bin/env bash
# The README's first command: set everything up on a fresh machine, then run the demo.
# First run: about 15 minutes to build Kubernetes from its Go module, plus a few
# minutes to install Ray into .venv. Later runs start in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m ray_operator.localkube.demo
