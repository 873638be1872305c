# shellcheck shell=bash
# Sourced by hack/build-operator-image.sh and hack/build-trainer-image.sh, so both images build the same way
# from the same base: Debian's buildah as root with chroot isolation (no container engine needed), from a
# Debian bookworm base made once with debootstrap, since no container registry is reachable.
# The caller defines log() (to stderr).

DEBIAN_BASE="localhost/kubetune-debian-base:bookworm"
# STORAGE_DRIVER asks for vfs, which works on any kernel; but buildah 1.28 reads it only where a storage.conf
# exists. Without one (Debian's package ships none) it picks overlay where the kernel allows, which stores
# layers as differences rather than whole copies (the trainer image's disk and time figures assume it).
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot

ensure_buildah() {
  if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing buildah and debootstrap from Debian's packages"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq buildah debootstrap >/dev/null
  fi
}

debian_base_exists() {
  buildah inspect --type image "$DEBIAN_BASE" >/dev/null 2>&1
}

# The base's image id, which names what the images were built from (the trainer image's tag includes it).
debian_base_id() {
  buildah inspect --type image --format '{{.FromImageID}}' "$DEBIAN_BASE"
}

# Makes the base unless buildah's storage on this machine already has it (about a minute, once). A subshell,
# so its cleanup trap leaves the caller's alone; a lock, so two builds at once make it once.
ensure_debian_base() (
  debian_base_exists && exit 0
  exec 9>/var/lock/kubetune-debian-base.lock
  flock 9
  debian_base_exists && exit 0
  log "making the Debian base with debootstrap (about a minute)"
  local start=$SECONDS rootfs container="" mount
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"; [ -z "$container" ] || buildah rm "$container" >/dev/null 2>&1' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" >/dev/null
  container="$(buildah from scratch)"
  mount="$(buildah mount "$container")"
  cp -a "$rootfs/." "$mount/"
  buildah umount "$container" >/dev/null
  buildah commit -q "$container" "$DEBIAN_BASE" >/dev/null
  log "made $DEBIAN_BASE in $((SECONDS - start)) s"
)
