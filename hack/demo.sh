#!/usr/bin/env bash
# The main job on a fresh machine: set up, start the local cluster with simulated GPU nodes, show them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
hack/setup.sh
exec .venv/bin/kubetune dev-cluster up "$@"
