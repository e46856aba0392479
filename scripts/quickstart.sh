#!/usr/bin/env bash
# Quick start, command 1: set up .venv (pinned requirements) and run the CPU comparison of
# LoRA / PiSSA / BA-LoRA on SmolLM2-135M-Instruct, offline. Extra flags go to quickstart.py.
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "usage: bash scripts/quickstart.sh [quickstart.py flags, e.g. --model tiny-llama --max_steps 4]"
  echo
  sed -n '2,/^set -/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python quickstart.py "$@"
