#!/usr/bin/env bash
# Rank sweep (paper figure "various ranks"): r = 1…128 for LoRA, PiSSA and BA-LoRA on LLaMA-2-7B and
# Mistral-7B, trained on MetaMathQA, scored on GSM8K and MATH; Full FT as the reference line.
#
#   bash scripts/rank_sweep.sh --dry-run
#   bash scripts/rank_sweep.sh && python plot_results.py rank_sweep --out_dir results/figures
#
# Runs: results/rank_sweep/<model>_<method>_r<r>/seed<k>/ and results/rank_sweep/<model>_full/seed<k>/.
# The rank is a command-line override of the model's metamath config (--lora_r r --lora_alpha r: α = r).
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
MODELS=${MODELS:-"llama2-7b mistral-7b"}
METHODS=${METHODS:-"lora pissa ba-lora"}
RANKS=${RANKS:-"1 2 4 8 16 32 64 128"}
SEEDS=${SEEDS:-"42 1024 2024"}
GPUS=${GPUS:-"0,1,2,3,4,5,6,7"}
MASTER_PORT=${MASTER_PORT:-29500}
WITH_FULL_FT=${WITH_FULL_FT:-1}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"

for model in $MODELS; do
  for method in $METHODS; do
    for r in $RANKS; do
      for seed in $SEEDS; do
        if run_begin rank_sweep "${model}_${method}_r${r}" "$seed"; then
          nlg_train_and_eval "$model" "$method" metamath "$seed" --lora_r "$r" --lora_alpha "$r"
        fi
      done
    done
  done
  if [ "$WITH_FULL_FT" = 1 ]; then
    for seed in $SEEDS; do
      if run_begin rank_sweep "${model}_full" "$seed"; then
        nlg_train_and_eval "$model" full metamath "$seed"
      fi
    done
  fi
done
lib_summary
if [ "$DRY_RUN" = 0 ]; then
  "$PY" plot_results.py rank_sweep --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/figures"
fi
