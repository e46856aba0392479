#!/usr/bin/env bash
# t-SNE over training steps (paper appendix figures): the MNLI validation features of BERT-large and
# GPT-2-XL, LoRA vs BA-LoRA, dumped every DUMP_STEPS optimizer steps (finetune_glue.py
# --feature_dump_steps), one 4-panel figure per step in STEPS. The paper does not list its steps;
# ours are the dumps at 2K, 6K and 12K steps (about 1 epoch of BERT-large at batch 32) and the final one.
# Each dump holds the validation set's last-layer features (9,815 × hidden floats, ~40-60 MB).
#
#   bash scripts/tsne_steps.sh --dry-run
#   bash scripts/tsne_steps.sh          # -> results/figures/tsne_steps/tsne_compare_step_<step>.{pdf,png}
#
# Runs: results/tsne_steps/<model>_<method>/seed<k>/ (metrics); the features stay in outputs/.
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
TASK=${TASK:-mnli}
MODELS=${MODELS:-"bert-large gpt2-xl"}
METHODS=${METHODS:-"lora ba-lora"}
SEEDS=${SEEDS:-"42"}
DUMP_STEPS=${DUMP_STEPS:-2000}
STEPS=${STEPS:-"2000 6000 12000 final"}
GPU=${GPU:-0}
GLUE_DIR=${GLUE_DIR:-}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$GPU}

for step in $STEPS; do
  if [ "$step" != final ] && [ $((step % DUMP_STEPS)) -ne 0 ]; then
    echo "error: step $step is not a multiple of DUMP_STEPS=$DUMP_STEPS: no features are dumped there" >&2
    exit 2
  fi
done

dirs=() titles=()
first_seed=${SEEDS%% *}
for model in $MODELS; do
  for method in $METHODS; do
    for seed in $SEEDS; do
      if run_begin tsne_steps "${model}_${method}" "$seed"; then
        glue_train_run "configs/glue/${TASK}_${model}_${method}.yaml" "$seed" --feature_dump_steps "$DUMP_STEPS"
      fi
    done
    dirs+=("$OUTPUTS_DIR/tsne_steps/${model}_${method}/seed${first_seed}/train")
    titles+=("${model} ${method}")
  done
done
lib_summary
for step in $STEPS; do
  cmd=("$PY" tsne_visualization.py --compare --step "$step" --features_dir "${dirs[@]}" --titles "${titles[@]}"
       --output_dir "$RESULTS_DIR/figures/tsne_steps")
  if [ "$DRY_RUN" = 1 ]; then
    printf '# then:'; printf ' %q' "${cmd[@]}"; printf '\n'
  else
    "${cmd[@]}"
  fi
done
