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
#              ABLATION_SEEDS); MINI_FULL_FT=1 adds Full FT of SmolLM2.
# Order: one seed of every probe, then the next seed, so an interrupted run holds complete seeds.
# Then the tables (results/mini/tables/mini_{imbalance,label_noise,lambda_scale,lora_reg}.md and the
# paired per-item tables mini_probes_{dev,nll}_paired.md) and figures (results/mini/figures) are rebuilt.
#
#   bash scripts/mini_probes.sh --dry-run                 # the plan, what is done, estimated CPU time
#   bash scripts/mini_probes.sh                           # everything still missing (resumes)
#   PROBES="imbalance noise" bash scripts/mini_probes.sh  # some probes
#   PROBES=lambda PROBE_NLG_BENCHES=gsm8k_nll bash scripts/mini_probes.sh  # λ probe, NLL only
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
SEEDS=${SEEDS:-"42 1024 2024"}
PROBES=${PROBES:-"imbalance noise lambda lora_reg seeds"}
PROBE_METHODS=${PROBE_METHODS:-"lora pissa ba-lora"}
MINORITY_CLASS=${MINORITY_CLASS:-positive}   # the tables read positive at 1:4, 1:19 and 1:49
IMBALANCE_RATIOS=${IMBALANCE_RATIOS:-"4 19 49"}  # 4: mild enough that the minority class is still learnt
NOISE_PERCENTS=${NOISE_PERCENTS:-"20 40"}
LAMBDA_SCALES=${LAMBDA_SCALES:-"0.1 10 100"}
# gsm8k: the SmolLM2 run. Not stsb: the three NLU terms are constant on its 1-column output (docs/nlu.md),
# so LoRA + Reg trains exactly as LoRA there; the table shows the LoRA runs in that cell and says so.
LORA_REG_TASKS=${LORA_REG_TASKS:-"gsm8k sst2 cola mrpc rte"}
# What the SmolLM2 probes (lambda, lora_reg gsm8k) evaluate. "gsm8k_nll" alone skips the ~4 min of greedy
# generation per run: at this scale every method solves 0-2 of the 64 problems, so accuracy cannot
# separate the λ scales, while the per-problem solution NLL can (the committed probe runs use it).
PROBE_NLG_BENCHES=${PROBE_NLG_BENCHES:-"gsm8k gsm8k_nll"}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
source "$(dirname "${BASH_SOURCE[0]}")/mini_lib.sh"
wants() { [[ " $PROBES " == *" $1 "* ]]; }
SUBSET_BENCHES[gsm8k]=$PROBE_NLG_BENCHES  # the seeds part passes it to mini.sh as MINI_NLG_BENCHES

# The iclr2026 NLG λ (λ1 λ2 λ3), read from the preset so the scaled runs follow it.
read -r -a base_lambdas <<<"$("$PY" -c "from balora.regularizers import preset
_, lam = preset('iclr2026', 'nlg'); print(lam['consistency'], lam['diversity'], lam['svd'])")"
scaled() { awk -v a="$1" -v s="$2" 'BEGIN { printf "%.10g", a * s }'; }

probes_for_seed() {  # SEED
  local seed=$1 method ratio level scale task cfg rows
  for method in $PROBE_METHODS; do
    cfg="configs/glue/sst2_minilm_${method}.yaml"
    if wants imbalance; then
      for ratio in $IMBALANCE_RATIOS; do
        rows=$((1800 + 1800 / ratio))  # ~1,800 negatives in the first 4,000 rows, plus the kept positives
        if run_begin mini/imbalance "sst2_${method}_${MINORITY_CLASS}1to${ratio}" "$seed" \
             "$(nlu_estimate "$cfg" sst2 "$method" "$rows")"; then
          glue_train_run "$cfg" "$seed" --minority_class "$MINORITY_CLASS" --imbalance_ratio "$ratio"
        fi
      done
    fi
    if wants noise; then
      for level in $NOISE_PERCENTS; do
        if run_begin mini/label_noise "sst2_${method}_noise${level}" "$seed" "$(nlu_estimate "$cfg" sst2 "$method")"; then
          glue_train_run "$cfg" "$seed" --label_noise "$(scaled "$level" 0.01)"
        fi
      done
    fi
  done
  if wants lambda; then
    for scale in $LAMBDA_SCALES; do
      if run_begin mini/lambda_scale "smollm2_ba-lora_lambda_x${scale}" "$seed" "$(nlg_estimate ba-lora)"; then
        nlg_train_and_eval smollm2 ba-lora gsm8k "$seed" "${GSM8K_TRAIN[@]}" \
          --lambda_consistency "$(scaled "${base_lambdas[0]}" "$scale")" \
          --lambda_diversity "$(scaled "${base_lambdas[1]}" "$scale")" \
          --lambda_svd "$(scaled "${base_lambdas[2]}" "$scale")"
      fi
    done
  fi
  if wants lora_reg; then
    for task in $LORA_REG_TASKS; do
      if [ "$task" = gsm8k ]; then
        if run_begin mini/lora_reg "smollm2_lora-reg" "$seed" "$(nlg_estimate lora-reg)"; then
          nlg_train_and_eval smollm2 lora gsm8k "$seed" "${GSM8K_TRAIN[@]}" --regularizer_preset iclr2026
        fi
        continue
      fi
      cfg="configs/glue/${task}_minilm_lora.yaml"
      if run_begin mini/lora_reg "${task}_lora-reg" "$seed" "$(nlu_estimate "$cfg" "$task" lora-reg)"; then
        glue_train_run "$cfg" "$seed" --regularizer_preset iclr2026
      fi
    done
  fi
}

for seed in $SEEDS; do
  probes_for_seed "$seed"
done
lib_summary

if wants seeds; then
  echo "# seeds: the mini rank sweep and ablation at seeds $SEEDS (scripts/mini.sh)"
  RANK_SEEDS="$SEEDS" ABLATION_SEEDS="$SEEDS" SEEDS="$SEEDS" MINI_NLG_BENCHES="$PROBE_NLG_BENCHES" \
    bash "$(dirname "${BASH_SOURCE[0]}")/mini.sh" "$@"
fi

tables=(mini_imbalance mini_label_noise mini_lambda_scale mini_lora_reg mini_probes_dev_paired mini_probes_nll_paired)
if [ "$DRY_RUN" = 1 ]; then
  echo "# then: $PY aggregate_results.py ${tables[*]} --results_dir $RESULTS_DIR --out_dir $RESULTS_DIR/mini/tables"
  echo "# then: $PY plot_results.py mini_imbalance mini_label_noise mini_lambda_scale --results_dir $RESULTS_DIR --out_dir $RESULTS_DIR/mini/figures"
  exit 0
fi
"$PY" aggregate_results.py "${tables[@]}" --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/mini/tables"
"$PY" plot_results.py mini_imbalance mini_label_noise mini_lambda_scale --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/mini/figures"
