#!/usr/bin/env bash
# GLUE grid: every task x method of the paper's NLU table for one model, seeds 42 / 1024 / 2024.
#
#   bash scripts/glue.sh --dry-run                                  # DeBERTa-v3-base, hub data (GPU)
#   GLUE_DIR=/data/glue bash scripts/glue.sh                        # original GLUE TSVs instead of the hub
#   bash scripts/glue.sh --grid models=minilm --seeds 42             # CPU mini table (MiniLM, $BALORA_DATA_DIR/glue)
#   bash scripts/glue.sh --grid models=minilm --grid tasks=mrpc --grid methods='lora ba-lora'
#
# Each run: configs/glue/<task>_<model-tag>_<method>.yaml -> outputs/nlu/<task>_<model-tag>_<method>/seed<k>/
# (features, checkpoints) and results/nlu/<task>_<model-tag>_<method>/seed<k>/ (config.yaml, run.json,
# metrics.json, log_history.json, DONE). A run whose DONE marker exists is skipped; an interrupted one
# resumes. scripts/nlu_table.sh runs this grid for DeBERTa-v3-base and then aggregates the table.
# The grid, its configs and the tables: balora/repro/studies.py (glue); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run glue "$@"
