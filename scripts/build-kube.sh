#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kubectl of Kubernetes $KUBE_VERSION, and
# etcd, from their Go modules (scripts/kube/go.mod, scripts/kube/etcd/go.mod) with the ordinary
# Go toolchain, into a cache outside the repository. Reruns take a second: the binaries are
# built once per machine (about 10 minutes on 2 cores, most of it compiling kube-apiserver).
set -euo pipefail
cd "$(dirname "$0")/kube"
KUBE_VERSION=$(grep -m1 -oP 'k8s\.io/kubernetes v\K[0-9.]+' go.mod)
ETCD_VERSION=$(grep -m1 -oP 'go\.etcd\.io/etcd/server/v3 v\K[0-9.]+' etcd/go.mod)
CACHE=${RAY_OPERATOR_KUBE_CACHE:-$HOME/.cache/ray-operator/kube-$KUBE_VERSION}
BIN=$CACHE/bin
need=(kube-apiserver kube-controller-manager kubectl etcd)

have_all() { for b in "${need[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if have_all; then echo "Kubernetes $KUBE_VERSION and etcd $ETCD_VERSION ready in $BIN"; exit 0; fi

command -v go >/dev/null || { echo "Go is missing: install Go 1.26 or newer" >&2; exit 1; }
mkdir -p "$BIN"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)
# What `kubectl version` and the apiserver's /version report (Kubernetes' own build stamps them
# the same way through hack/lib/version.sh).
minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean"
done
echo ">> building Kubernetes $KUBE_VERSION (kube-apiserver, kube-controller-manager, kubectl)"
go build -trimpath -ldflags "-s -w$stamp" -o "$BIN/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl
echo ">> building etcd $ETCD_VERSION"
(cd etcd && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
have_all
echo "Kubernetes $KUBE_VERSION and etcd $ETCD_VERSION built into $BIN in $(( $(date +%s) - start )) s"
