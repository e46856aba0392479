#!/usr/bin/env bash
# Training-loss curves (paper figures, r = 128 and r = 32): task loss and each regulariser term over
# optimizer steps for LoRA, PiSSA and BA-LoRA (and Full FT) on LLaMA-2-7B / MetaMathQA, from the Trainer
# log history. The r = 128 runs are the NLG table's metamath runs and the r = 32 runs the rank sweep's
# (same study and run names), so after nlg_table.sh and rank_sweep.sh this only draws the figures;
# otherwise it trains (and evaluates) exactly those runs first.
#
#   bash scripts/loss_curves.sh --dry-run
#   bash scripts/loss_curves.sh     # -> results/figures/loss_curves.{pdf,png}, loss_curves_r32.{pdf,png}
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
export MODELS=${MODELS:-"llama2-7b"}
export METHODS=${METHODS:-"full lora pissa ba-lora"}
export SUBSETS=metamath
export SEEDS=${SEEDS:-"42 1024 2024"}
export GPUS=${GPUS:-"0,1,2,3,4,5,6,7"}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
bash scripts/nlg_table.sh "$@"
# r = 32: the rank sweep's LoRA / PiSSA / BA-LoRA runs of the first model (Full FT has no rank).
MODELS=${MODELS%% *} METHODS="lora pissa ba-lora" RANKS=32 WITH_FULL_FT=0 bash scripts/rank_sweep.sh "$@"
if [ "$DRY_RUN" = 0 ]; then
  "$PY" plot_results.py loss_curves loss_curves_r32 --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/figures"
else
  echo "# then: $PY plot_results.py loss_curves loss_curves_r32 --results_dir $RESULTS_DIR --out_dir $RESULTS_DIR/figures"
fi
