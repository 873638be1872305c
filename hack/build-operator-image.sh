#!/usr/bin/env bash
# Builds the operator image with Debian's buildah (root, vfs storage, chroot isolation: no container engine
# needed) from a Debian base made with debootstrap, since no container registry is reachable here (both
# shared with the trainer image: hack/lib/debian-base.sh). Users build the same Dockerfile from the public
# python:3.11-slim base with any engine.
#   hack/build-operator-image.sh [TAG]      (default localhost/kubetune-operator:dev)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${1:-localhost/kubetune-operator:dev}"

log() { printf '[operator-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# shellcheck source=lib/debian-base.sh
source "$root/hack/lib/debian-base.sh"

ensure_buildah
ensure_debian_base

log "building $tag"
# The machine's CA bundle is lent to the build's pip (a mounted volume and a build argument), not kept.
buildah bud -q --build-arg "BASE=$DEBIAN_BASE" --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
  -v /etc/ssl/certs:/etc/ssl/certs:ro -t "$tag" -f "$root/Dockerfile" "$root" >/dev/null
# Rebuilds leave the previous image untagged; drop those so the vfs storage does not grow run after run.
buildah rmi --prune >/dev/null 2>&1 || true
log "built $tag"
