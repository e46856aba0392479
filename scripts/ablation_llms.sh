#!/usr/bin/env bash
# Ablation of the regularisers on all three LLMs of the paper's ablation figure (v4/v5): w/o reg,
# consistency only, diversity only, SVD only, all three × LLaMA-2-7B, Mistral-7B, Gemma-7B, trained on
# MetaMathQA and scored on GSM8K and MATH. The DeBERTa-v3-base GLUE part is scripts/ablation.sh's.
# Run names are ablation.sh's (ablation/<model>_<variant>), so the LLaMA-2-7B runs are shared with it.
# Each variant is the model's BA-LoRA config (ICLR-2026 recipe) with λ switched off on the command line.
#
#   bash scripts/ablation_llms.sh --dry-run
#   bash scripts/ablation_llms.sh && python aggregate_results.py ablation --paper --out_dir results/tables
#
# The published figure used the v1-v5 recipe; the table says so beside the paper's numbers.
# The grid, its configs and the tables: balora/repro/studies.py (ablation_llms); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run ablation_llms "$@"
