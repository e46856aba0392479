#!/usr/bin/env bash
# t-SNE over training steps (paper appendix figures): the MNLI validation features of BERT-large and
# GPT-2-XL, LoRA vs BA-LoRA, dumped every DUMP_STEPS optimizer steps (finetune_glue.py
# --feature_dump_steps), one 4-panel figure per step in STEPS. The paper does not list its steps;
# ours are the dumps at 2K, 6K and 12K steps (about 1 epoch of BERT-large at batch 32) and the final one.
# Each dump holds the validation set's last-layer features (9,815 × hidden floats, ~40-60 MB).
#
#   bash scripts/tsne_steps.sh --dry-run
#   bash scripts/tsne_steps.sh          # -> results/figures/tsne_steps/tsne_compare_step_<step>.{pdf,png}
#
# Runs: results/tsne_steps/<model>_<method>/seed<k>/ (metrics); the features stay in outputs/.
# The grid, its configs and the tables: balora/repro/studies.py (tsne_steps); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run tsne_steps "$@"
