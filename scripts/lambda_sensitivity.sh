#!/usr/bin/env bash
# λ sensitivity (a later paper version's figure, GSM8K and MATH): BA-LoRA on LLaMA-2-7B / MetaMathQA with
# one λ scaled at a time, the other two at the ICLR-2026 values (λ1 = 0.025, λ2 = λ3 = 0.005).
# The paper's grid was not recovered; ours scales each λ by 1/4, 1/2, 2 and 4. Scale 1 is the NLG
# table's BA-LoRA run (nlg/<model>_ba-lora_metamath), which the figure takes as its centre point.
#
#   bash scripts/lambda_sensitivity.sh --dry-run
#   bash scripts/lambda_sensitivity.sh
#
# Runs: results/lambda_sensitivity/<model>_<term>_x<scale>/seed<k>/ (term: consistency, diversity, svd).
# The grid, its configs and the tables: balora/repro/studies.py (lambda_sensitivity); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run lambda_sensitivity "$@"
