#!/usr/bin/env bash
# Sets up a machine for the demo, the tests and the benchmarks (as root, on Debian): Kubernetes
# and etcd binaries (built once from their Go modules into ~/.cache), iproute2, and Debian's
# debootstrap, buildah and podman for the project's image, redis-server for the GCS fault
# tolerance tests, a virtualenv in .venv with every
# extra, and the image itself (rebuilt only when its sources change).
set -euo pipefail
cd "$(dirname "$0")/.."
echo ">> Kubernetes binaries (first time: about 15 minutes)"
bash scripts/build-kube.sh
need=()
for tool in ip:iproute2 unshare:util-linux debootstrap:debootstrap buildah:buildah podman:podman runc:runc \
    redis-server:redis-server; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo ">> apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo ">> creating .venv"
  python3 -m venv .venv
fi
echo ">> installing the project into .venv (first time: a few minutes, Ray is large)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,aws,examples]'
echo ">> the project's image (first time: about 2 minutes)"
bash scripts/build-image.sh
