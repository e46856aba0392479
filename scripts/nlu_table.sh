#!/usr/bin/env bash
# NLU table (paper): DeBERTa-v3-base, 10 methods × 8 GLUE tasks (dev sets), seeds 42, 1024, 2024.
# The grid is the glue study's (scripts/glue.sh: any GLUE model); this one fixes the
# paper's model and tasks and then builds the table.
#
#   bash scripts/nlu_table.sh --dry-run
#   GLUE_DIR=/data/glue bash scripts/nlu_table.sh        # local GLUE TSVs; unset: nyu-mll/glue hub
#   python aggregate_results.py nlu --paper --out_dir results/tables
#
# Runs: results/nlu/<task>_deberta-v3-base_<method>/seed<k>/; configs/glue/<task>_deberta-v3-base_<method>.yaml
# hold the recipe (epochs, lr, batch, r = 8 on all attention and FFN linears).
# The grid, its configs and the tables: balora/repro/studies.py (nlu_table); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run nlu_table "$@"
