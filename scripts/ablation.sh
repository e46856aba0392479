#!/usr/bin/env bash
# Ablation of the regularisers (paper): w/o reg, consistency only, diversity only, SVD only, all three;
# LLaMA-2-7B on MetaMathQA → GSM8K, MATH, and DeBERTa-v3-base on GLUE → GLUE avg.
# Each variant is the BA-LoRA config with λ switched off on the command line (ABLATION_FLAGS in balora/repro/studies.py).
#
#   bash scripts/ablation.sh --dry-run
#   bash scripts/ablation.sh && python aggregate_results.py ablation --paper --out_dir results/tables
#
# Runs: results/ablation/llama2-7b_<variant>/seed<k>/ and results/ablation/glue_<task>_<variant>/seed<k>/.
# The grid, its configs and the tables: balora/repro/studies.py (ablation); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run ablation "$@"
