#!/usr/bin/env bash
# Sets up a machine for the demo, the tests and the benchmarks: Kubernetes and etcd binaries
# (built once from their Go modules into ~/.cache), iproute2 from Debian, and a virtualenv in
# .venv with every extra.
set -euo pipefail
cd "$(dirname "$0")/.."
echo ">> Kubernetes binaries (first time: about 15 minutes)"
bash scripts/build-kube.sh
if ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
  apt-get install -y -qq iproute2 util-linux >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo ">> creating .venv"
  python3 -m venv .venv
fi
echo ">> installing the project into .venv (first time: a few minutes, Ray is large)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,aws,examples]'
