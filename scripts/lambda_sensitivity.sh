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
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
MODELS=${MODELS:-"llama2-7b"}
TERMS=${TERMS:-"consistency diversity svd"}
SCALES=${SCALES:-"0.25 0.5 2 4"}
SEEDS=${SEEDS:-"42 1024 2024"}
GPUS=${GPUS:-"0,1,2,3,4,5,6,7"}
MASTER_PORT=${MASTER_PORT:-29500}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"

# The ICLR-2026 NLG λ (docs/method.md §3; the configs' regularizer_preset iclr2026).
declare -A BASE_LAMBDA=([consistency]=0.025 [diversity]=0.005 [svd]=0.005)

for model in $MODELS; do
  for term in $TERMS; do
    if [ -z "${BASE_LAMBDA[$term]:-}" ]; then
      echo "error: unknown term $term (consistency, diversity, svd)" >&2; exit 2
    fi
    for scale in $SCALES; do
      value=$(awk -v b="${BASE_LAMBDA[$term]}" -v s="$scale" 'BEGIN { printf "%.6g", b * s }')
      for seed in $SEEDS; do
        if run_begin lambda_sensitivity "${model}_${term}_x${scale}" "$seed"; then
          nlg_train_and_eval "$model" ba-lora metamath "$seed" "--lambda_${term}" "$value"
        fi
      done
    done
  done
done
lib_summary
