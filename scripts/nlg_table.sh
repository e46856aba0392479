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
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
MODELS=${MODELS:-"llama2-7b mistral-7b gemma-7b"}
METHODS=${METHODS:-"full lora pissa ba-lora"}
SUBSETS=${SUBSETS:-"metamath python conversation"}
SEEDS=${SEEDS:-"42 1024 2024"}
GPUS=${GPUS:-"0,1,2,3,4,5,6,7"}
MASTER_PORT=${MASTER_PORT:-29500}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"

for model in $MODELS; do
  for method in $METHODS; do
    for subset in $SUBSETS; do
      for seed in $SEEDS; do
        if run_begin nlg "${model}_${method}_${subset}" "$seed"; then
          nlg_train_and_eval "$model" "$method" "$subset" "$seed"
        fi
      done
    done
  done
done
lib_summary
if [ "$DRY_RUN" = 0 ] && [ -z "${LIB_NO_TABLE:-}" ]; then
  "$PY" aggregate_results.py nlg --paper --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/tables"
fi
