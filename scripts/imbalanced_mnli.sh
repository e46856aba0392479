#!/usr/bin/env bash
# Imbalanced MNLI (v7 appendix: minority-class recall LoRA 5.8, PiSSA 26.4, BA-LoRA 61.7): LoRA, PiSSA and
# BA-LoRA on DeBERTa-v3-base trained on MNLI with one class made a minority. The paper does not say how it
# built the imbalance; ours: the contradiction class keeps a seeded 1/19 of its training rows, so each other
# class outnumbers it 19 : 1 (finetune_glue.py --minority_class / --imbalance_ratio); the matched dev set is
# unchanged. The table reports the final model's recall of that class, balanced accuracy and macro-F1
# (aggregate_results.py imbalanced_mnli, which expects the default class and ratio).
#
#   bash scripts/imbalanced_mnli.sh --dry-run
#   bash scripts/imbalanced_mnli.sh
#   bash scripts/imbalanced_mnli.sh --grid minority_class=neutral --grid ratio=49   # another construction
#
# Runs: results/imbalanced_mnli/mnli_deberta-v3-base_<method>_<class>1to<ratio>/seed<k>/.
# The grid, its configs and the tables: balora/repro/studies.py (imbalanced_mnli); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run imbalanced_mnli "$@"
