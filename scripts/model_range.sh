#!/usr/bin/env bash
# BA-LoRA across models (the paper's experiment on GSM8K and HumanEval over LLaMA-2-7/13B, LLaMA-3-8/70B,
# Mistral-7B, Gemma-7B, Qwen1.5-7B, Yi-1.5-34B, DeepSeek-MoE-16B and Mixtral-8x7B; no number of it was
# recovered): LoRA, PiSSA and BA-LoRA trained on the first 100K rows of MetaMathQA (scored on GSM8K) and
# of CodeFeedback (scored on HumanEval) with the NLG table's recipe; rank 64 for the models outside that
# table (our choice), ZeRO-3 for the 34B and 70B models (more than one node in practice).
# The two MoE models are not in the list: DeepSeek-MoE-16B loads only with remote code, and Mixtral's
# experts are fused parameter tensors in transformers 5, which LoRA cannot target as linear layers.
#
#   bash scripts/model_range.sh --dry-run
#   MODELS="llama3-8b qwen1.5-7b" bash scripts/model_range.sh
#
# Runs: results/model_range/<model>_<method>_<subset>/seed<k>/; table: aggregate_results.py model_range.
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
MODELS=${MODELS:-"llama2-7b llama2-13b llama3-8b llama3-70b mistral-7b gemma-7b qwen1.5-7b yi1.5-34b"}
METHODS=${METHODS:-"lora pissa ba-lora"}
SUBSETS=${SUBSETS:-"metamath python"}
SEEDS=${SEEDS:-"42 1024 2024"}
GPUS=${GPUS:-"0,1,2,3,4,5,6,7"}
MASTER_PORT=${MASTER_PORT:-29500}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
# The paper reports one benchmark per training set here.
SUBSET_BENCHES[metamath]=gsm8k
SUBSET_BENCHES[python]=humaneval

for model in $MODELS; do
  for method in $METHODS; do
    for subset in $SUBSETS; do
      for seed in $SEEDS; do
        if run_begin model_range "${model}_${method}_${subset}" "$seed"; then
          nlg_train_and_eval "$model" "$method" "$subset" "$seed"
        fi
      done
    done
  done
done
lib_summary
if [ "$DRY_RUN" != 1 ]; then
  "$PY" aggregate_results.py model_range --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/tables"
fi
