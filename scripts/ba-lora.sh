#!/usr/bin/env bash
# The paper's BA-LoRA rows of the NLG table: LLaMA-2-7B / Mistral-7B / Gemma-7B × MetaMathQA /
# CodeFeedback / WizardLM, seeds 42 1024 2024, DeepSpeed ZeRO-2, training + evaluation.
# The NLG table's grid restricted to BA-LoRA (--grid models=..., --grid subsets=..., --seeds, --gpus).
#   bash scripts/ba-lora.sh --dry-run     # print the plan
#   bash scripts/ba-lora.sh               # run; finished runs are skipped, so it resumes
# The grid, its configs and the tables: balora/repro/studies.py (ba-lora); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run ba-lora "$@"
