#!/usr/bin/env bash
# Builds the trainer image (trainer_image/Dockerfile, CPU variant) with Debian's buildah from the Debian base
# the operator image uses (hack/lib/debian-base.sh), and saves it as an archive that containerd imports:
#   ctr -n k8s.io images import "$archive"
# The tag names the build's inputs, so an unchanged tree reuses the archive at once (no buildah run):
#   localhost/kubetune/trainer:dev-<first 12 hex of sha256 over trainer_image/Dockerfile, pyproject.toml,
#   README.md, every file under operator/ but __pycache__, *.pyc and *.egg-info (sorted path and content),
#   and the Debian base's image id>
# The archive is a docker-archive (`docker save`'s format: uncompressed layers, manifest.json's RepoTags = the
# reference), which `ctr images import` (containerd v2) accepts and names by that reference:
#   ${KUBETUNE_CACHE:-~/.cache/kubetune}/images/trainer-<tag>.tar
# (Not an OCI archive: buildah 1.28 gzips an OCI archive's layers even with --disable-compression, which is
# slower to write and to import, both on 2 cores.)
# Only the current archive is kept there, and only the current trainer image in buildah's storage (plus the
# cached dependency layers, so a code change rebuilds one small layer, not torch).
#
#   hack/build-trainer-image.sh                   stdout: one line, REF
#   hack/build-trainer-image.sh --print-archive   stdout: one line, REF ARCHIVE (separated by one space)
# Progress goes to stderr; buildah's own output to images/trainer-build.log. Measured on 2 cores: cold, the
# Debian base (about a minute, once per machine), the dependencies layer (torch & co., 6.2 GB unpacked, about
# 3.5 minutes), the code layer (seconds) and the archive (6.5 GB, about 45 s); a code change: about 50 s; an
# unchanged tree: a fraction of a second. Disk: the image's layers and the archive stay (about 13 GB); a cold
# build needs about 20 GB more while it runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
images="$cache/images"
repository="localhost/kubetune/trainer"

print_archive=false
case "${1:-}" in
  "") ;;
  --print-archive) print_archive=true ;;
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) echo "usage: $0 [--print-archive]" >&2; exit 2 ;;
esac

log() { printf '[trainer-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# shellcheck source=lib/debian-base.sh
source "$root/hack/lib/debian-base.sh"

# Long steps print nothing to the terminal for minutes; a heartbeat every 30 s shows they are alive and where.
with_heartbeat() {  # with_heartbeat WHAT COMMAND... (its output goes to the build log)
  local what="$1"; shift
  local start=$SECONDS next=$((SECONDS + 30)) pid status=0
  "$@" >>"$build_log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS >= next)) && kill -0 "$pid" 2>/dev/null; then
      log "$what: still running ($((SECONDS - start)) s): $(grep -a . "$build_log" | tail -n 1 | cut -c1-90)"
      next=$((next + 30))
    fi
  done
  wait "$pid" || status=$?
  if [ "$status" -ne 0 ]; then
    log "$what failed (exit $status) after $((SECONDS - start)) s; the end of $build_log:"
    tail -n 40 "$build_log" >&2
    return "$status"
  fi
  log "$what: done in $((SECONDS - start)) s"
}

finish() {  # prints the result on stdout
  if $print_archive; then echo "$ref $archive"; else echo "$ref"; fi
}

ensure_buildah
ensure_debian_base
mkdir -p "$images"

# The build context is staged from the inputs the tag names, so the image is built from exactly what was
# hashed (another edit in the checkout meanwhile makes the next tag, not a mismatched image).
context="$(mktemp -d "${TMPDIR:-/tmp}/kubetune-trainer-context.XXXXXX")"
trap 'rm -rf "$context"' EXIT
digest="$(python3 - "$root" "$context" "$(debian_base_id)" <<'EOF'
import hashlib, sys
from pathlib import Path

root, context, base_id = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
files = [root / "trainer_image" / "Dockerfile", root / "pyproject.toml", root / "README.md"]
files += [p for p in (root / "operator").rglob("*") if p.is_file() and p.suffix != ".pyc"
          and not any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)]
digest = hashlib.sha256()
for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
    name = path.relative_to(root).as_posix()
    data = path.read_bytes()
    digest.update(f"{name}\0{len(data)}\0".encode() + data)
    (context / name).parent.mkdir(parents=True, exist_ok=True)
    (context / name).write_bytes(data)
digest.update(f"base\0{base_id}".encode())
print(digest.hexdigest()[:12])
EOF
)"
tag="dev-$digest"
ref="$repository:$tag"
archive="$images/trainer-$tag.tar"
if [ -f "$archive" ]; then
  log "$ref: $archive is up to date"
  finish
  exit 0
fi

# One build at a time (the second finds the first's archive); the archive is renamed into place when complete.
exec 8>"$images/.build.lock"
flock -n 8 || { log "waiting for another build of the trainer image"; flock 8; }
if [ -f "$archive" ]; then
  log "$ref: built meanwhile by another run"
  finish
  exit 0
fi
rm -f "$images"/.trainer-*.tar.partial
build_log="$images/trainer-build.log"
: >"$build_log"
total=$SECONDS

# The machine's CA bundle and pip cache are lent to the build's pip (mounted volumes and build arguments), not
# kept in the image: the host's cache holds the wheels it built (deepspeed's), so the build need not.
pip_cache="${PIP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pip}"
mkdir -p "$pip_cache"
bud=(buildah bud --layers --build-arg "BASE=$DEBIAN_BASE"
     --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt -v /etc/ssl/certs:/etc/ssl/certs:ro
     --build-arg PIP_CACHE=/root/.cache/pip -v "$pip_cache:/root/.cache/pip"
     -f "$context/trainer_image/Dockerfile")
log "$ref: building (buildah's output: $build_log)"
# Built as its own target first, so its time shows apart; the full build then finds it cached.
with_heartbeat "dependencies layer" "${bud[@]}" --target dependencies "$context"
with_heartbeat "code layer" "${bud[@]}" -t "$ref" "$context"

# Older trainer images, then the untagged images they leave (repeatedly: each removal can leave its parent
# without children), so the vfs storage holds one trainer image and the layers it is built from.
buildah images --noheading --format '{{.Name}}:{{.Tag}}' \
  | { grep "^$repository:" | grep -vxF "$ref" || true; } | while read -r old; do buildah rmi "$old" >/dev/null 2>&1 || true; done
for _ in 1 2 3 4 5 6 7 8; do
  [ -n "$(buildah rmi --prune 2>/dev/null)" ] || break
done

# Older archives go first: the push needs room for the archive and as much again in temporary files.
find "$images" -maxdepth 1 -name 'trainer-*.tar' ! -name "trainer-$tag.tar" -delete
partial="$images/.trainer-$tag.tar.partial"
with_heartbeat "archive" buildah push "$ref" "docker-archive:$partial:$ref"
mv -f "$partial" "$archive"
log "$ref: $archive ($(du -h "$archive" | cut -f1)) in $((SECONDS - total)) s"
finish
