#!/usr/bin/env bash
# CPU mini-reproduction on real small pretrained models (2 CPU cores, no GPU), resumable:
#   NLG  SmolLM2-135M-Instruct × {LoRA, PiSSA, BA-LoRA} (+ Full FT with MINI_FULL_FT=1) × 3 seeds,
#        trained on the first 160 GSM8K train rows ("#### N" -> "The answer is: N"; 40 steps of 4),
#        scored on the first $GSM8K_LIMIT GSM8K test rows (accuracy, and the teacher-forced NLL of their
#        reference solutions: eval/gsm8k_nll.py); rank sweep r = 1, 4, 16, 64; ablation.
#   NLU  all-MiniLM-L6-v2 × {Full FT, BitFit, LoRA, DoRA, AdaLoRA, PiSSA, BA-LoRA} × SST-2, CoLA,
#        MRPC, RTE, STS-B (local GLUE TSVs; the first 1,200-4,000 train rows, see
#        scripts/generate_glue_configs.py) × 3 seeds; ablation on MRPC and STS-B; t-SNE of LoRA vs
#        BA-LoRA features on SST-2 dev.
# Order: seed 42 of the main tables, then the rank sweep and the ablation (seed 42), then the other
# seeds, so an interrupted grid already holds one complete seed of everything.
# Then the tables (results/mini/tables) and figures (results/mini/figures) are regenerated.
#
#   bash scripts/mini.sh --dry-run               # the plan, what is done, estimated CPU time
#   bash scripts/mini.sh                         # run everything still missing (resumes)
#   bash scripts/mini.sh --only 'mini/nlu/rte_'  # a slice
#
# Sizes were chosen for ~7.5 h on 2 cores (to stay under ~8 hours); the per-run estimates printed by
# --dry-run are explained in scripts/mini_lib.sh (GSM8K_LIMIT, GSM8K_MAX_NEW_TOKENS and GLUE_DIR are set there).
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
SEEDS=${SEEDS:-"42 1024 2024"}
NLG_METHODS=${NLG_METHODS:-"lora pissa ba-lora"}
MINI_FULL_FT=${MINI_FULL_FT:-0}          # 1: add Full FT to the NLG table (+~0.6 h)
RANKS=${RANKS:-"1 4 64"}                 # r = 16 is the main NLG table's rank and is reused
RANK_SEEDS=${RANK_SEEDS:-"42"}           # one seed off the main rank (CPU time)
ABLATION_VARIANTS=${ABLATION_VARIANTS:-"consistency diversity svd"}  # noreg/all = main PiSSA/BA-LoRA runs
ABLATION_SEEDS=${ABLATION_SEEDS:-"42"}   # one seed for the three middle variants (CPU time)
ABLATION_TASKS=${ABLATION_TASKS:-"mrpc stsb"}
NLU_TASKS=${NLU_TASKS:-"sst2 cola mrpc rte stsb"}
NLU_METHODS=${NLU_METHODS:-"full bitfit lora dora adalora pissa ba-lora"}
TSNE_TASK=${TSNE_TASK:-sst2}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
source "$(dirname "${BASH_SOURCE[0]}")/mini_lib.sh"   # models, data, GSM8K evaluation, estimates

# --- main tables: NLG (r = 16) and NLU, one seed at a time --------------------------------------------
nlg_methods=$NLG_METHODS
[ "$MINI_FULL_FT" = 1 ] && nlg_methods="full $nlg_methods"
main_tables_for_seed() {  # SEED
  local seed=$1 method task cfg
  for method in $nlg_methods; do
    if run_begin mini/nlg "smollm2_${method}" "$seed" "$(nlg_estimate "$method")"; then
      nlg_train_and_eval smollm2 "$method" gsm8k "$seed" "${GSM8K_TRAIN[@]}"
    fi
  done
  for task in $NLU_TASKS; do
    for method in $NLU_METHODS; do
      cfg="configs/glue/${task}_minilm_${method}.yaml"
      if run_begin mini/nlu "${task}_${method}" "$seed" "$(nlu_estimate "$cfg" "$task" "$method")"; then
        glue_train_run "$cfg" "$seed"
      fi
    done
  done
}
read -r -a seed_list <<<"$SEEDS"
main_tables_for_seed "${seed_list[0]}"

# --- NLG rank sweep (r = 16 comes from the main table) -----------------------------------------------
for method in lora pissa ba-lora; do
  for r in $RANKS; do
    for seed in $RANK_SEEDS; do
      if run_begin mini/rank_sweep "smollm2_${method}_r${r}" "$seed" "$(nlg_estimate "$method")"; then
        nlg_train_and_eval smollm2 "$method" gsm8k "$seed" "${GSM8K_TRAIN[@]}" --lora_r "$r" --lora_alpha "$r"
      fi
    done
  done
done

# --- ablation: BA-LoRA with terms switched off (w/o reg = PiSSA, all = BA-LoRA: main runs) -----------
for variant in $ABLATION_VARIANTS; do
  for seed in $ABLATION_SEEDS; do
    if run_begin mini/ablation "smollm2_${variant}" "$seed" "$(nlg_estimate "$variant")"; then
      # shellcheck disable=SC2086
      nlg_train_and_eval smollm2 ba-lora gsm8k "$seed" "${GSM8K_TRAIN[@]}" ${ABLATION_FLAGS[$variant]}
    fi
  done
  for task in $ABLATION_TASKS; do
    cfg="configs/glue/${task}_minilm_ba-lora.yaml"
    for seed in $ABLATION_SEEDS; do
      if run_begin mini/ablation "${task}_${variant}" "$seed" "$(nlu_estimate "$cfg" "$task" "$variant")"; then
        # shellcheck disable=SC2086
        glue_train_run "$cfg" "$seed" ${ABLATION_FLAGS[$variant]}
      fi
    done
  done
done

# --- main tables: the remaining seeds ----------------------------------------------------------------
for seed in "${seed_list[@]:1}"; do
  main_tables_for_seed "$seed"
done

lib_summary

# --- tables and figures -----------------------------------------------------------------------------
seed0=${SEEDS%% *}
tsne_dirs=("$OUTPUTS_DIR/mini/nlu/${TSNE_TASK}_lora/seed$seed0/train" "$OUTPUTS_DIR/mini/nlu/${TSNE_TASK}_ba-lora/seed$seed0/train")
finish_cmds=(
  "$PY aggregate_results.py mini_nlg mini_nlu mini_ablation mini_nll_paired --results_dir $RESULTS_DIR --out_dir $RESULTS_DIR/mini/tables --paper"
  "$PY plot_results.py mini_rank_sweep mini_ablation mini_loss_curves --results_dir $RESULTS_DIR --out_dir $RESULTS_DIR/mini/figures"
  "$PY tsne_visualization.py --compare --features_dir ${tsne_dirs[*]} --titles MiniLM-LoRA MiniLM-BA-LoRA --output_dir $RESULTS_DIR/mini/figures"
)
if [ "$DRY_RUN" = 1 ]; then
  printf '# then: %s\n' "${finish_cmds[@]}"
  exit 0
fi
$PY aggregate_results.py mini_nlg mini_nlu mini_ablation mini_nll_paired --results_dir "$RESULTS_DIR" \
  --out_dir "$RESULTS_DIR/mini/tables" --paper
$PY plot_results.py mini_rank_sweep mini_ablation mini_loss_curves --results_dir "$RESULTS_DIR" \
  --out_dir "$RESULTS_DIR/mini/figures"
if [ -f "${tsne_dirs[0]}/features_step_final.npy" ] && [ -f "${tsne_dirs[1]}/features_step_final.npy" ]; then
  $PY tsne_visualization.py --compare --features_dir "${tsne_dirs[@]}" --titles "MiniLM LoRA" "MiniLM BA-LoRA" \
    --output_dir "$RESULTS_DIR/mini/figures"
else
  echo "t-SNE: features of ${TSNE_TASK} LoRA/BA-LoRA seed $seed0 not in $OUTPUTS_DIR (runs not done here); skipped"
fi
