#!/usr/bin/env bash
# NLU diversity term on MNLI (v7 appendix: covariance form 91.26, entropy form 90.41, LoRA 90.71):
# BA-LoRA on DeBERTa-v3-base with the entropy form of the diversity term instead of the covariance form.
# The covariance row and the LoRA row are the NLU table's runs (nlu/mnli_deberta-v3-base_{ba-lora,lora}),
# trained here too when missing (same run names, so nlu_table.sh and this script share them).
#
#   bash scripts/nlu_diversity.sh --dry-run
#   bash scripts/nlu_diversity.sh
#
# Runs: results/nlu_diversity/mnli_deberta-v3-base_ba-lora-entropy/seed<k>/ and the two NLU table runs.
# The grid, its configs and the tables: balora/repro/studies.py (nlu_diversity); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run nlu_diversity "$@"
