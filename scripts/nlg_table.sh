#!/usr/bin/env bash
# NLG main table (paper): {LLaMA-2-7B, Mistral-7B, Gemma-7B} × {Full FT, LoRA, PiSSA, BA-LoRA}, each
# trained on the three instruction sets (first 100K rows; the configs name them) — metamath → GSM8K,
# MATH; python (CodeFeedback) → HumanEval, MBPP; conversation (WizardLM) → MT-Bench — seeds 42, 1024, 2024.
#
#   bash scripts/nlg_table.sh --dry-run          # the plan: runs, configs, commands, outputs
#   bash scripts/nlg_table.sh                    # run (resumes: finished runs are skipped), then the table:
#                                                # results/tables/nlg.{md,tex,json} beside the paper's numbers
#   bash scripts/nlg_table.sh --rehearse         # every stage at toy scale on CPU (tiny stand-ins)
#
# Runs: results/nlg/<model>_<method>_<subset>/seed<k>/ (see results/README.md).
# Everything else (data, hyperparameters, DeepSpeed) lives in configs/nlg/<model>_<subset>_<method>.yaml.
# The grid, its configs and the tables: balora/repro/studies.py (nlg_table); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run nlg_table "$@"
