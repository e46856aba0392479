#!/usr/bin/env bash
# t-SNE figure (paper): last-hidden-layer features on MNLI validation, LoRA vs BA-LoRA, for BERT-large
# and GPT-2-XL (r = 8, α = 16), sklearn TSNE (2-D, perplexity 30, random_state 42); 4 panels.
#
#   bash scripts/tsne.sh --dry-run
#   bash scripts/tsne.sh                 # -> results/figures/tsne_compare_step_final.{pdf,png}
#
# Runs: results/tsne/<model>_<method>/seed<k>/ (metrics); the features (.npy, large) stay in outputs/.
# The figure uses the first seed; the other seeds only add the accuracy's std.
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
TASK=${TASK:-mnli}
MODELS=${MODELS:-"bert-large gpt2-xl"}
METHODS=${METHODS:-"lora ba-lora"}
SEEDS=${SEEDS:-"42 1024 2024"}
GPU=${GPU:-0}
GLUE_DIR=${GLUE_DIR:-}
STUDY=${STUDY:-tsne}
FIG_DIR=${FIG_DIR:-}  # default: <results_dir>/figures
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$GPU}

dirs=() titles=()
first_seed=${SEEDS%% *}
for model in $MODELS; do
  for method in $METHODS; do
    for seed in $SEEDS; do
      if run_begin "$STUDY" "${model}_${method}" "$seed"; then
        glue_train_run "configs/glue/${TASK}_${model}_${method}.yaml" "$seed"
      fi
    done
    dirs+=("$OUTPUTS_DIR/$STUDY/${model}_${method}/seed${first_seed}/train")
    titles+=("${model} ${method}")
  done
done
lib_summary
cmd=("$PY" tsne_visualization.py --compare --features_dir "${dirs[@]}" --titles "${titles[@]}"
     --output_dir "${FIG_DIR:-$RESULTS_DIR/figures}")
if [ "$DRY_RUN" = 1 ]; then
  printf '# then:'; printf ' %q' "${cmd[@]}"; printf '\n'
else
  "${cmd[@]}"
fi
