#!/usr/bin/env bash
# CPU mini-reproduction on real small pretrained models (2 CPU cores, no GPU), resumable:
#   NLG  SmolLM2-135M-Instruct × {LoRA, PiSSA, BA-LoRA} (+ Full FT with --grid full_ft=1) × 3 seeds,
#        trained on the first 160 GSM8K train rows ("#### N" -> "The answer is: N"; 40 steps of 4),
#        scored on the first $GSM8K_LIMIT GSM8K test rows (accuracy, and the teacher-forced NLL of their
#        reference solutions: eval/gsm8k_nll.py); rank sweep r = 1, 4, 16, 64; ablation.
#   NLU  all-MiniLM-L6-v2 × {Full FT, BitFit, LoRA, DoRA, AdaLoRA, PiSSA, BA-LoRA} × SST-2, CoLA,
#        MRPC, RTE, STS-B (local GLUE TSVs; the first 1,200-4,000 train rows, see
#        scripts/generate_glue_configs.py) × 3 seeds; ablation on MRPC and STS-B; t-SNE of LoRA vs
#        BA-LoRA features on SST-2 dev.
# Order: seed 42 of the main tables, then the rank sweep and the ablation (seed 42), then the other
# seeds, so an interrupted grid already holds one complete seed of everything.
# Then the tables (results/mini/tables) and figures (results/mini/figures) are regenerated.
#
#   bash scripts/mini.sh --dry-run               # the plan, what is done, estimated CPU time
#   bash scripts/mini.sh                         # run everything still missing (resumes)
#   bash scripts/mini.sh --only 'mini/nlu/rte_'  # a slice
#
# Sizes were chosen for ~7.5 h on 2 cores (to stay under ~8 hours); the per-run estimates printed by
# --dry-run are explained in balora/repro/studies.py (GSM8K_LIMIT, GSM8K_MAX_NEW_TOKENS, the estimates).
# The grid, its configs and the tables: balora/repro/studies.py (mini); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run mini "$@"
