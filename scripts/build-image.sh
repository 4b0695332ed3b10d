#!/usr/bin/env bash
# Builds the project's image from its Dockerfile without a Docker engine or a registry:
# debootstrap makes a Debian root filesystem with Python (the base), podman imports it, and
# buildah builds the Dockerfile on it. The image is rebuilt only when what it is made of changed
# (the Dockerfile, pyproject.toml, README.md, src/). Needs root and Debian's debootstrap,
# buildah and podman (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${RAY_OPERATOR_IMAGE:-localhost/ray-operator:dev}
BASE=localhost/ray-operator-base:bookworm
CACHE=${RAY_OPERATOR_IMAGE_CACHE:-$HOME/.cache/ray-operator/image}
digest=$(cat Dockerfile .dockerignore pyproject.toml README.md $(git ls-files src | sort) | sha256sum | cut -c1-16)
if [ "$(podman image inspect --format '{{index .Labels "ray-operator.source"}}' "$IMAGE" 2>/dev/null)" = "$digest" ]; then
  echo "image $IMAGE is up to date ($digest)"; exit 0
fi
start=$(date +%s)
if ! podman image exists "$BASE"; then
  if [ ! -f "$CACHE/rootfs.tar" ]; then
    echo ">> debootstrap of Debian bookworm with Python 3.11 (about a minute)"
    rm -rf "$CACHE/rootfs" && mkdir -p "$CACHE"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
      "$CACHE/rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$CACHE/rootfs" -cf "$CACHE/rootfs.tar" . && rm -rf "$CACHE/rootfs"
  fi
  podman import "$CACHE/rootfs.tar" "$BASE" >/dev/null
fi
# Behind a TLS-intercepting proxy (as on this project's machines) pip inside the build needs
# the machine's CA bundle: mounted for the build only, never copied into the image.
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
echo ">> buildah bud -t $IMAGE (base $BASE)"
buildah bud --quiet --network host --layers=false \
  -v "$ca:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt \
  --build-arg BASE="$BASE" --label "ray-operator.source=$digest" -t "$IMAGE" . >/dev/null
echo "image $IMAGE built in $(( $(date +%s) - start )) s"
