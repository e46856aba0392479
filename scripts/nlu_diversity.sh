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
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
TASK=${TASK:-mnli}
MODEL_TAG=${MODEL_TAG:-deberta-v3-base}
SEEDS=${SEEDS:-"42 1024 2024"}
GPU=${GPU:-0}
GLUE_DIR=${GLUE_DIR:-}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$GPU}

for seed in $SEEDS; do
  if run_begin nlu_diversity "${TASK}_${MODEL_TAG}_ba-lora-entropy" "$seed"; then
    # The full-distribution entropy over the C classes (−mean H, maximised), the v1-v5 NLG form.
    glue_train_run "configs/glue/${TASK}_${MODEL_TAG}_ba-lora.yaml" "$seed" --diversity_type entropy
  fi
done
for method in ba-lora lora; do
  for seed in $SEEDS; do
    if run_begin nlu "${TASK}_${MODEL_TAG}_${method}" "$seed"; then
      glue_train_run "configs/glue/${TASK}_${MODEL_TAG}_${method}.yaml" "$seed"
    fi
  done
done
lib_summary
if [ "$DRY_RUN" != 1 ]; then
  "$PY" aggregate_results.py nlu_diversity --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/tables" --paper
fi
