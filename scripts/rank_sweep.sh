#!/usr/bin/env bash
# Rank sweep (paper figure "various ranks"): r = 1…128 for LoRA, PiSSA and BA-LoRA on LLaMA-2-7B and
# Mistral-7B, trained on MetaMathQA, scored on GSM8K and MATH; Full FT as the reference line.
#
#   bash scripts/rank_sweep.sh --dry-run
#   bash scripts/rank_sweep.sh && python plot_results.py rank_sweep --out_dir results/figures
#
# Runs: results/rank_sweep/<model>_<method>_r<r>/seed<k>/ and results/rank_sweep/<model>_full/seed<k>/.
# The rank is a command-line override of the model's metamath config (--lora_r r --lora_alpha r: α = r).
# The grid, its configs and the tables: balora/repro/studies.py (rank_sweep); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run rank_sweep "$@"
