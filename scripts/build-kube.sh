#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kubectl 1.20.2 from Debian's own source
# package (no Docker, no binary downloads) into a cache outside the repository, and installs etcd.
# Reruns take a second: the binaries are built once per machine.
set -euo pipefail
KUBE_VERSION=1.20.2
CACHE=${RAY_OPERATOR_KUBE_CACHE:-$HOME/.cache/ray-operator/kube-$KUBE_VERSION}
BIN=$CACHE/bin
need=(kube-apiserver kube-controller-manager kubectl)

have_all() { for b in "${need[@]}"; do [ -x "$BIN/$b" ] || return 1; done; command -v etcd >/dev/null; }
if have_all; then echo "kube binaries ready in $BIN"; exit 0; fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
echo ">> installing build tools and etcd from Debian (needs root)"
if [ ! -f /etc/apt/sources.list.d/debian-src.sources ]; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    | as_root tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
fi
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  golang-1.19-go rsync golang-github-modern-go-reflect2-dev etcd-server >/dev/null

if ! have_all; then
  echo ">> building Kubernetes $KUBE_VERSION from source: about 7 minutes on 2 cores, once per machine"
  SRC=$CACHE/src
  mkdir -p "$SRC" "$BIN"
  cd "$SRC"
  if [ ! -d kubernetes-$KUBE_VERSION ]; then
    apt-get source --download-only kubernetes >/dev/null
    tar xzf kubernetes_*.orig.tar.gz
  fi
  cd kubernetes-$KUBE_VERSION
  # The vendored reflect2 1.0.1 crashes on Go >= 1.18; Debian ships the fixed 1.0.2.
  R=vendor/github.com/modern-go/reflect2
  rm -f $R/*.go $R/*.s
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s $R/
  mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
  PATH=/usr/lib/go-1.19/bin:$PATH GOPATH=$PWD/.go GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 \
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl"
  for b in "${need[@]}"; do cp "_output/local/bin/linux/$(dpkg --print-architecture)/$b" "$BIN/$b"; done
  cd "$CACHE" && rm -rf "$SRC"
fi
have_all
echo "kube binaries ready in $BIN"
