#!/usr/bin/env bash
# "LoRA + Reg" (a later paper version): the BA-LoRA regularisers on standard LoRA initialisation
# (B = 0; the reference is the model with the adapter switched off), to separate the regularisers'
# effect from PiSSA's. Each run is the model's LoRA config with the ICLR-2026 regulariser preset
# switched on from the command line; train_nlg.py records it as trained "lora+reg".
# Compare with the NLG table's LoRA (no reg), PiSSA and BA-LoRA (PiSSA + reg) runs of the same model.
#
#   bash scripts/lora_reg.sh --dry-run
#   bash scripts/lora_reg.sh
#
# Runs: results/lora_reg/<model>_lora-reg_<subset>/seed<k>/. The paper's table values were not recovered
# (results/paper/README.md), and which models and benchmarks it covers is not recorded: the default is
# the three LLMs on MetaMathQA (GSM8K, MATH); --grid subsets='metamath python conversation' gives all five.
# The grid, its configs and the tables: balora/repro/studies.py (lora_reg); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run lora_reg "$@"
