#!/usr/bin/env bash
# Training-loss curves (paper figure): task loss and each regulariser term over optimizer steps for
# LoRA, PiSSA and BA-LoRA (and Full FT) on LLaMA-2-7B / MetaMathQA, from the Trainer log history.
# The runs are the NLG table's metamath runs (same study and run names), so after nlg_table.sh this
# only draws the figure; otherwise it trains (and evaluates) exactly those runs first.
#
#   bash scripts/loss_curves.sh --dry-run
#   bash scripts/loss_curves.sh            # -> results/figures/loss_curves.{pdf,png}
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
if [ "$DRY_RUN" = 0 ]; then
  "$PY" plot_results.py loss_curves --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/figures"
else
  echo "# then: $PY plot_results.py loss_curves --results_dir $RESULTS_DIR --out_dir $RESULTS_DIR/figures"
fi
