#!/usr/bin/env bash
# The paper's bias claims at mini scale (CPU, the mini grid's models, configs and machinery: resumable,
# stage fingerprints, --dry-run with CPU time estimates), seeds 42, 1024, 2024:
#   imbalance  MiniLM on SST-2 with the positive class kept at 1:4, 1:19 and 1:49 (finetune_glue.py
#              --minority_class positive --imbalance_ratio R; the dev set as is): LoRA, PiSSA, BA-LoRA;
#              minority recall, balanced accuracy, macro-F1 and AUROC of the final model.
#   noise      MiniLM on SST-2 with 20% / 40% of the training labels flipped (--label_noise; fixed per
#              seed): LoRA, PiSSA, BA-LoRA; accuracy on the clean dev set.
#   lambda     SmolLM2, the mini NLG BA-LoRA run with all three λ of the iclr2026 preset × 0.1, 10, 100
#              (× 1 is the main mini run); GSM8K NLL and accuracy.
#   lora_reg   the regularisers on standard LoRA init (the LoRA configs + --regularizer_preset iclr2026):
#              SmolLM2 GSM8K and MiniLM on SST-2, CoLA, MRPC, RTE (on STS-B it is LoRA: constant terms).
#   seeds      the rank sweep and the ablation of scripts/mini.sh at all three seeds (RANK_SEEDS,
#              ABLATION_SEEDS); --grid full_ft=1 adds Full FT of SmolLM2.
# Order: one seed of every probe, then the next seed, so an interrupted run holds complete seeds.
# Then the tables (results/mini/tables/mini_{imbalance,label_noise,lambda_scale,lora_reg}.md and the
# paired per-item tables mini_probes_{dev,nll}_paired.md) and figures (results/mini/figures) are rebuilt.
#
#   bash scripts/mini_probes.sh --dry-run                 # the plan, what is done, estimated CPU time
#   bash scripts/mini_probes.sh                           # everything still missing (resumes)
#   bash scripts/mini_probes.sh --grid probes='imbalance noise'  # some probes
#   bash scripts/mini_probes.sh --grid probes=lambda --grid nlg_benches=gsm8k_nll  # λ probe, NLL only
# The grid, its configs and the tables: balora/repro/studies.py (mini_probes); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run mini_probes "$@"
