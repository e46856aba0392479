#!/usr/bin/env bash
# Ablation of the regularisers on all three LLMs of the paper's ablation figure (v4/v5): w/o reg,
# consistency only, diversity only, SVD only, all three × LLaMA-2-7B, Mistral-7B, Gemma-7B, trained on
# MetaMathQA and scored on GSM8K and MATH. The DeBERTa-v3-base GLUE part is scripts/ablation.sh's.
# Run names are ablation.sh's (ablation/<model>_<variant>), so the LLaMA-2-7B runs are shared with it.
# Each variant is the model's BA-LoRA config (ICLR-2026 recipe) with λ switched off on the command line.
#
#   bash scripts/ablation_llms.sh --dry-run
#   bash scripts/ablation_llms.sh && python aggregate_results.py ablation --paper --out_dir results/tables
#
# The published figure used the v1-v5 recipe; the table says so beside the paper's numbers.
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
MODELS=${MODELS:-"llama2-7b mistral-7b gemma-7b"}
VARIANTS=${VARIANTS:-"noreg consistency diversity svd all"}
SEEDS=${SEEDS:-"42 1024 2024"}
GPUS=${GPUS:-"0,1,2,3,4,5,6,7"}
MASTER_PORT=${MASTER_PORT:-29500}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"

for model in $MODELS; do
  for variant in $VARIANTS; do
    for seed in $SEEDS; do
      if run_begin ablation "${model}_${variant}" "$seed"; then
        # shellcheck disable=SC2086  # ABLATION_FLAGS holds several words on purpose
        nlg_train_and_eval "$model" ba-lora metamath "$seed" ${ABLATION_FLAGS[$variant]}
      fi
    done
  done
done
lib_summary
if [ "$DRY_RUN" = 0 ]; then
  "$PY" aggregate_results.py ablation --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/tables" --paper
else
  echo "# then: $PY aggregate_results.py ablation --results_dir $RESULTS_DIR --out_dir $RESULTS_DIR/tables --paper"
fi
