#!/usr/bin/env bash
# Ablation of the regularisers (paper): w/o reg, consistency only, diversity only, SVD only, all three;
# LLaMA-2-7B on MetaMathQA → GSM8K, MATH, and DeBERTa-v3-base on GLUE → GLUE avg.
# Each variant is the BA-LoRA config with λ switched off on the command line (ABLATION_FLAGS in lib.sh).
#
#   bash scripts/ablation.sh --dry-run
#   bash scripts/ablation.sh && python aggregate_results.py ablation --paper --out_dir results/tables
#
# Runs: results/ablation/llama2-7b_<variant>/seed<k>/ and results/ablation/glue_<task>_<variant>/seed<k>/.
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
NLG_MODEL=${NLG_MODEL:-llama2-7b}
VARIANTS=${VARIANTS:-"noreg consistency diversity svd all"}
GLUE_TASKS=${GLUE_TASKS:-"mnli sst2 mrpc cola qnli qqp rte stsb"}
NLU_MODEL_TAG=${NLU_MODEL_TAG:-deberta-v3-base}
SEEDS=${SEEDS:-"42 1024 2024"}
GPUS=${GPUS:-"0,1,2,3,4,5,6,7"}
MASTER_PORT=${MASTER_PORT:-29500}
GLUE_DIR=${GLUE_DIR:-}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"

for variant in $VARIANTS; do
  for seed in $SEEDS; do
    if run_begin ablation "${NLG_MODEL}_${variant}" "$seed"; then
      # shellcheck disable=SC2086
      nlg_train_and_eval "$NLG_MODEL" ba-lora metamath "$seed" ${ABLATION_FLAGS[$variant]}
    fi
  done
  for task in $GLUE_TASKS; do
    for seed in $SEEDS; do
      if run_begin ablation "glue_${task}_${variant}" "$seed"; then
        # shellcheck disable=SC2086
        glue_train_run "configs/glue/${task}_${NLU_MODEL_TAG}_ba-lora.yaml" "$seed" ${ABLATION_FLAGS[$variant]}
      fi
    done
  done
done
lib_summary
if [ "$DRY_RUN" = 0 ]; then
  "$PY" aggregate_results.py ablation ablation_glue --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/tables" --paper
  "$PY" plot_results.py ablation ablation_glue --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/figures"
fi
