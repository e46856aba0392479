#!/usr/bin/env bash
# t-SNE figure (paper): last-hidden-layer features on MNLI validation, LoRA vs BA-LoRA, for BERT-large
# and GPT-2-XL (r = 8, α = 16), sklearn TSNE (2-D, perplexity 30, random_state 42); 4 panels.
#
#   bash scripts/tsne.sh --dry-run
#   bash scripts/tsne.sh                 # -> results/figures/tsne_compare_step_final.{pdf,png}
#
# Runs: results/tsne/<model>_<method>/seed<k>/ (metrics); the features (.npy, large) stay in outputs/.
# The figure uses the first seed; the other seeds only add the accuracy's std.
# The grid, its configs and the tables: balora/repro/studies.py (tsne); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run tsne "$@"
