#!/usr/bin/env bash
# The README's second command, and what CI runs: set up from nothing, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo ">> ruff";          .venv/bin/ruff check .
echo ">> mypy --strict"; .venv/bin/mypy
echo ">> import-linter"; .venv/bin/lint-imports
echo ">> pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
