#!/usr/bin/env bash
# NLU table (paper): DeBERTa-v3-base, 10 methods × 8 GLUE tasks (dev sets), seeds 42, 1024, 2024.
#
#   bash scripts/nlu_table.sh --dry-run
#   GLUE_DIR=/data/glue bash scripts/nlu_table.sh        # local GLUE TSVs; unset: nyu-mll/glue hub
#   python aggregate_results.py nlu --paper --out_dir results/tables
#
# Runs: results/nlu/<task>_<method>/seed<k>/; configs/glue/<task>_<model-tag>_<method>.yaml hold the
# recipe (epochs, lr, batch, r = 8 on all attention and FFN linears).
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
MODEL_TAG=${MODEL_TAG:-deberta-v3-base}
TASKS=${TASKS:-"mnli sst2 mrpc cola qnli qqp rte stsb"}
METHODS=${METHODS:-"full bitfit hadapter padapter lora loha dora adalora pissa ba-lora"}
SEEDS=${SEEDS:-"42 1024 2024"}
GPU=${GPU:-0}  # one GPU per run (set CUDA_VISIBLE_DEVICES yourself to run several scripts at once)
GLUE_DIR=${GLUE_DIR:-}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$GPU}

for task in $TASKS; do
  for method in $METHODS; do
    for seed in $SEEDS; do
      if run_begin nlu "${task}_${method}" "$seed"; then
        glue_train_run "configs/glue/${task}_${MODEL_TAG}_${method}.yaml" "$seed"
      fi
    done
  done
done
lib_summary
