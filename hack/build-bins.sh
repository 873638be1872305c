#!/usr/bin/env bash
# Builds the local control plane's and the real node's binaries from Go modules into a cache outside the checkout, so every
# clone on this machine (CI's included) reuses them. A binary is rebuilt only when its stamp (version and
# module checksums) changes. A cold build takes about 25-30 minutes on 2 cores; progress is printed as it goes.
#
#   KUBETUNE_CACHE   cache root (default ~/.cache/kubetune); binaries land in $KUBETUNE_CACHE/bin
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
bin="$cache/bin"
mkdir -p "$bin/.stamps"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build-bins %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Long builds print nothing for minutes; a heartbeat shows they are alive.
with_heartbeat() {
  local what="$1"; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null && log "$what: still building ($((SECONDS - start)) s)"
  done
  wait "$pid"
  log "$what: done in $((SECONDS - start)) s"
}

module_version() {  # module_version DIR MODULE
  (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

# A stamp names what a binary was built from: the version plus the wrapper's go.sum, when there is one.
stamp_of() {  # stamp_of VERSION [GO_SUM]
  if [ $# -gt 1 ]; then echo "$1 $(sha256sum "$2" | cut -c1-16)"; else echo "$1"; fi
}

up_to_date() {  # up_to_date STAMP BINARY...
  local stamp="$1"; shift
  local b
  for b in "$@"; do
    [ -x "$bin/$b" ] && [ "$(cat "$bin/.stamps/$b" 2>/dev/null)" = "$stamp" ] || return 1
  done
}

mark() {  # mark STAMP BINARY...
  local stamp="$1"; shift
  local b
  for b in "$@"; do echo "$stamp" > "$bin/.stamps/$b"; done
}

build_kubernetes() {
  local version stamp ldflags
  version="$(module_version "$here/k8s" k8s.io/kubernetes)"
  stamp="$(stamp_of "$version" "$here/k8s/go.sum")"
  up_to_date "$stamp" kube-apiserver kube-controller-manager kube-scheduler && return
  ldflags="$(kubernetes_ldflags "$version")"
  log "kubernetes $version: building kube-apiserver, kube-controller-manager, kube-scheduler (cold: about 7 min on 2 cores)"
  (cd "$here/k8s" && with_heartbeat "kubernetes $version" \
    go build -trimpath -pgo=off -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler)
  mark "$stamp" kube-apiserver kube-controller-manager kube-scheduler
}

# Module zips carry no git metadata: without these stamps the binaries report v0.0.0, which breaks Helm's
# kubeVersion checks and kubectl's skew warnings.
kubernetes_ldflags() {  # kubernetes_ldflags VERSION
  local minor pkg ldflags="-s -w"
  minor="$(echo "$1" | cut -d. -f2)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$1 -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000"
    ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ldflags"
}

# The real node's kubelet: from the same wrapper module and with the same stamp as the control plane (same
# version, same go.sum), built on its own so adding it did not rebuild the others.
build_kubelet() {
  local version stamp ldflags
  version="$(module_version "$here/k8s" k8s.io/kubernetes)"
  stamp="$(stamp_of "$version" "$here/k8s/go.sum")"
  up_to_date "$stamp" kubelet && return
  ldflags="$(kubernetes_ldflags "$version")"
  log "kubelet $version: building (cold, after the control plane: about 1 min)"
  (cd "$here/k8s" && with_heartbeat "kubelet $version" \
    go build -trimpath -pgo=off -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$bin/" \
      k8s.io/kubernetes/cmd/kubelet)
  mark "$stamp" kubelet
}

# The real node's runtime: containerd v2 (Debian's 1.6 lacks the CRI RuntimeConfig call kubelet 1.38 needs).
# Static, without the snapshotters this machine has no use for.
build_containerd() {
  local stamp
  stamp="$(stamp_of "$CONTAINERD_VERSION")"
  up_to_date "$stamp" containerd containerd-shim-runc-v2 ctr && return
  log "containerd $CONTAINERD_VERSION: building containerd, its runc shim and ctr (cold: about 2 min)"
  GOBIN="$bin" with_heartbeat "containerd $CONTAINERD_VERSION" go install -trimpath \
    -tags "no_btrfs no_devmapper no_zfs" -ldflags "-s -w" \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
  mark "$stamp" containerd containerd-shim-runc-v2 ctr
}

build_coredns() {
  local stamp
  stamp="$(stamp_of "$COREDNS_VERSION")"
  up_to_date "$stamp" coredns && return
  log "coredns $COREDNS_VERSION: building (cold: about 3 min)"
  GOBIN="$bin" with_heartbeat "coredns $COREDNS_VERSION" go install -trimpath -ldflags "-s -w" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
  mark "$stamp" coredns
}

# The node's sandbox binary (hack/pause); `kubetune dev-cluster up` packs it into an image.
build_pause() {
  local stamp
  stamp="$(cat "$here/pause/go.mod" "$here/pause/main.go" | sha256sum | cut -c1-16)"
  up_to_date "$stamp" pause && return
  log "pause: building"
  (cd "$here/pause" && go build -trimpath -ldflags "-s -w" -o "$bin/pause" .)
  mark "$stamp" pause
}

build_etcd() {
  local version stamp
  version="$(module_version "$here/etcd" go.etcd.io/etcd/server/v3)"
  stamp="$(stamp_of "$version" "$here/etcd/go.sum")"
  up_to_date "$stamp" etcd && return
  log "etcd $version: building (cold: about 1.5 min)"
  (cd "$here/etcd" && with_heartbeat "etcd $version" \
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
  mark "$stamp" etcd
}

build_kwok() {
  local stamp src
  stamp="$(stamp_of "$KWOK_VERSION")"
  up_to_date "$stamp" kwok kwokctl && [ -d "$cache/kwok-stages" ] && return
  log "kwok $KWOK_VERSION: building kwok and kwokctl (cold: about 2.5 min)"
  GOBIN="$bin" with_heartbeat "kwok $KWOK_VERSION" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  # kwok's default stages ship in its module; the cluster config needs them verbatim once it adds its own.
  src="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  rm -rf "$cache/kwok-stages"
  cp -r "$src/kustomize/stage" "$cache/kwok-stages"
  chmod -R u+w "$cache/kwok-stages"
  mark "$stamp" kwok kwokctl
}

build_helm() {
  local stamp k8s_minor
  k8s_minor="$(module_version "$here/k8s" k8s.io/kubernetes | cut -d. -f2)"
  stamp="$(stamp_of "$HELM_VERSION k8s1.$k8s_minor")"
  up_to_date "$stamp" helm && return
  log "helm $HELM_VERSION: building (cold: about 1.5 min)"
  # Without these stamps `helm version` is blank and offline templating assumes Kubernetes 1.20.
  GOBIN="$bin" with_heartbeat "helm $HELM_VERSION" go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mark "$stamp" helm
}

# Kueue's manager, and its CRDs and webhooks from the same module (devcluster/kueue.py installs them).
build_kueue() {
  local stamp src
  stamp="$(stamp_of "$KUEUE_VERSION")"
  up_to_date "$stamp" kueue && [ -d "$cache/kueue-config" ] && return
  log "kueue $KUEUE_VERSION: building (cold: about 4 min)"
  GOBIN="$bin" with_heartbeat "kueue $KUEUE_VERSION" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  src="$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  rm -rf "$cache/kueue-config"
  mkdir -p "$cache/kueue-config"
  cp -r "$src/config/components/crd" "$src/config/components/webhook" "$cache/kueue-config/"
  chmod -R u+w "$cache/kueue-config"
  mark "$stamp" kueue
}

build_etcd
build_kwok
build_kubernetes
build_helm
build_kubelet
build_containerd
build_coredns
build_pause
build_kueue
log "all binaries ready in $bin"
