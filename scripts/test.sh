#!/usr/bin/env bash
# Quick start, command 2: set up .venv (pinned requirements) and run the test suite, offline.
# Extra flags go to pytest (e.g. -k regularizers, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
