#!/usr/bin/env bash
# Training-loss curves (paper figures, r = 128 and r = 32): task loss and each regulariser term over
# optimizer steps for LoRA, PiSSA and BA-LoRA (and Full FT) on LLaMA-2-7B / MetaMathQA, from the Trainer
# log history. The r = 128 runs are the NLG table's metamath runs and the r = 32 runs the rank sweep's
# (same study and run names), so after nlg_table.sh and rank_sweep.sh this only draws the figures;
# otherwise it trains (and evaluates) exactly those runs first.
#
#   bash scripts/loss_curves.sh --dry-run
#   bash scripts/loss_curves.sh     # -> results/figures/loss_curves.{pdf,png}, loss_curves_r32.{pdf,png}
# The grid, its configs and the tables: balora/repro/studies.py (loss_curves); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run loss_curves "$@"
