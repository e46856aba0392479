#!/usr/bin/env bash
# Noisy-pretraining probe (v6 §3.2.2): PiSSA vs BA-LoRA on RoBERTa-base (~160 GB curated pre-training
# text) and T5-base (~750 GB C4), to see whether the regularisers help more on the model pre-trained on
# noisier data. The paper reports CoLA, MRPC and an average over an unnamed GLUE subset; ours is
# CoLA, MRPC, RTE and STS-B with each task's DeBERTa-v3-base recipe (configs/glue/<task>_<model>_<method>.yaml).
# The paper itself calls the probe suggestive, not causal (architecture and objective differ too).
#
#   bash scripts/noisy_probe.sh --dry-run
#   bash scripts/noisy_probe.sh                  # GLUE_DIR=/data/glue for the original TSVs
#
# Runs: results/noisy_probe/<task>_<model>_<method>/seed<k>/.
# The grid, its configs and the tables: balora/repro/studies.py (noisy_probe); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run noisy_probe "$@"
