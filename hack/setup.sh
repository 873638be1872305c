#!/usr/bin/env bash
# Sets up a fresh machine for kubetune's demo and tests; idempotent, so a warm machine passes in seconds.
# Installs the Python package with its test tools into .venv, builds the local control plane's and real node's
# binaries into ~/.cache/kubetune and the trainer image beside them (cold: about 35-45 minutes on 2 cores, most of it the Go
# builds; warm: seconds).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null || { log "Go >= 1.26 is required to build the control plane"; exit 1; }
command -v python3.11 >/dev/null || { log "Python 3.11 is required"; exit 1; }
if ! command -v ss >/dev/null; then
  log "installing iproute2 (ss), which the tests use to check what the cluster listens on"
  apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  log "installing Debian's prometheus (server and promtool), which the observability tests run for real"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# The local cluster's real node: Debian's runc and CNI plugins (containerd, the kubelet and CoreDNS are built
# from Go modules below), iptables for the kubelet and the portmap plugin, buildah and debootstrap for the
# trainer image.
node_packages=(runc containernetworking-plugins iptables buildah debootstrap)
missing=()
for package in "${node_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing the real node's packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || { log "creating .venv"; python3.11 -m venv .venv; }
log "installing kubetune[test] into .venv"
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'

# The image the real node's training pods run (cold: about 10 minutes; warm: instant, keyed on its inputs) is
# built beside the Go builds: its steps wait mostly on downloads and the disk, the Go builds on the CPUs, so a
# cold setup takes about as long as the Go builds alone. It starts after the venv so that its pip finds torch &
# co. in pip's cache instead of downloading them a second time.
hack/build-trainer-image.sh >/dev/null &
image_pid=$!
bins_status=0
hack/build-bins.sh || bins_status=$?
image_status=0
wait "$image_pid" || image_status=$?
[ "$bins_status" -eq 0 ] || { log "building the binaries failed (exit $bins_status)"; exit "$bins_status"; }
[ "$image_status" -eq 0 ] || { log "building the trainer image failed (exit $image_status)"; exit "$image_status"; }
