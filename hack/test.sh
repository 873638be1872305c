#!/usr/bin/env bash
# Runs every test: sets up what is missing, then pytest (the local cluster starts once for the session).
# Extra arguments go to pytest, e.g. `hack/test.sh -m unit` for the unit tier alone.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
hack/setup.sh
.venv/bin/ruff check operator tests benchmarks
.venv/bin/lint-imports
.venv/bin/mypy
# The slowest tests are listed at the end, so a run that grows longer shows where.
exec .venv/bin/pytest --durations=40 "$@"
