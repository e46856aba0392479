#!/usr/bin/env bash
# Quick start, command 2: set up .venv (pinned requirements), check the code style (ruff format + ruff check)
# and run the test suite, offline.
# Extra flags go to pytest (e.g. -k regularizers, -x; -n 0 for one process).
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "usage: bash scripts/test.sh [pytest flags, e.g. -k regularizers -x]"
  echo
  sed -n '2,/^set -/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The tests that read benchmark files use $BALORA_DATA_DIR (default data/, filled by scripts/fetch_data.py),
# else CI's verified read-only copy beside the checkout; without either they skip.
if [ -z "${BALORA_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export BALORA_DATA_DIR=../shared/data
fi
# Style first (seconds): the formatter's layout and the linter, as configured in pyproject.toml.
.venv/bin/ruff format --check --quiet . || { echo "error: run '.venv/bin/ruff format .'" >&2; exit 1; }
.venv/bin/ruff check --quiet .
# One pytest-xdist worker per core, at most 4 (most of the suite's time is single-threaded: interpreter
# start-up and imports of the scripts it runs); each test module runs whole on one worker, so a module's
# fixtures (a built wheel, a trained tiny run) are made once. `-n 0` runs everything in one process.
workers=$(nproc 2>/dev/null || echo 2); [ "$workers" -le 4 ] || workers=4
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadscope --no-loadscope-reorder "$@"
