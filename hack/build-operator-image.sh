#!/usr/bin/env bash
# Builds the operator image with Debian's buildah (root, vfs storage, chroot isolation: no container engine
# needed) from a Debian base made with debootstrap, since no container registry is reachable here. Users
# build the same Dockerfile from the public python:3.11-slim base with any engine.
#   hack/build-operator-image.sh [TAG]      (default localhost/kubetune-operator:dev)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${1:-localhost/kubetune-operator:dev}"
base="localhost/kubetune-debian-base:bookworm"
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot

log() { printf '[operator-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing buildah and debootstrap from Debian's packages"
  apt-get update -qq && apt-get install -y -qq buildah debootstrap >/dev/null
fi

# The base is kept in buildah's own storage on this machine, so it is made once.
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  log "making the Debian base with debootstrap (about a minute)"
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" >/dev/null
  container="$(buildah from scratch)"
  mount="$(buildah mount "$container")"
  cp -a "$rootfs/." "$mount/"
  buildah umount "$container" >/dev/null
  buildah commit -q "$container" "$base" >/dev/null
  buildah rm "$container" >/dev/null
fi

log "building $tag"
# The machine's CA bundle is lent to the build's pip (a mounted volume and a build argument), not kept.
buildah bud -q --build-arg "BASE=$base" --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
  -v /etc/ssl/certs:/etc/ssl/certs:ro -t "$tag" -f "$root/Dockerfile" "$root" >/dev/null
# Rebuilds leave the previous image untagged; drop those so the vfs storage does not grow run after run.
buildah rmi --prune >/dev/null 2>&1 || true
log "built $tag"
