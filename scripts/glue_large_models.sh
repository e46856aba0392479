#!/usr/bin/env bash
# BERT-large and GPT-2-XL, LoRA vs BA-LoRA on the eight GLUE tasks (the paper's GLUE runs on these
# models: BA-LoRA gains 2.03-2.47% on BERT-L and 1.61-1.90% on GPT-2-XL; per-task numbers not recovered).
# Recipe: r = 8, α = 16; 20 epochs on CoLA, MRPC, RTE, STS-B, 5 on MNLI, QQP, QNLI, SST-2; batch 16 for
# GPT-2-XL (configs/glue/<task>_<model>_<method>.yaml, from scripts/generate_glue_configs.py).
# GLUE-X (the out-of-distribution test sets) is not run: this repository has no GLUE-X loader.
#
#   bash scripts/glue_large_models.sh --dry-run
#   bash scripts/glue_large_models.sh            # GLUE_DIR=/data/glue for the original TSVs
#
# Runs: results/glue_large/<task>_<model>_<method>/seed<k>/ (metrics.json: score = the task's metric).
# The grid, its configs and the tables: balora/repro/studies.py (glue_large_models); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run glue_large_models "$@"
