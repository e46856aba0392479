#!/usr/bin/env bash
# NLU table (paper): DeBERTa-v3-base, 10 methods × 8 GLUE tasks (dev sets), seeds 42, 1024, 2024.
# The grid itself is scripts/glue.sh (any GLUE model, on the same lib.sh); this wrapper fixes the
# paper's model and tasks and then builds the table.
#
#   bash scripts/nlu_table.sh --dry-run
#   GLUE_DIR=/data/glue bash scripts/nlu_table.sh        # local GLUE TSVs; unset: nyu-mll/glue hub
#   python aggregate_results.py nlu --paper --out_dir results/tables
#
# Runs: results/nlu/<task>_deberta-v3-base_<method>/seed<k>/; configs/glue/<task>_deberta-v3-base_<method>.yaml
# hold the recipe (epochs, lr, batch, r = 8 on all attention and FFN linears).
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
export MODEL_TAG=deberta-v3-base   # the table spec (balora/repro/results.py nlu_table) reads these run names
export TASKS=${TASKS:-"mnli sst2 mrpc cola qnli qqp rte stsb"}
export METHODS=${METHODS:-"full bitfit hadapter padapter lora loha dora adalora pissa ba-lora"}
export SEEDS=${SEEDS:-"42 1024 2024"}
export GPU=${GPU:-0}
export GLUE_DIR=${GLUE_DIR:-}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
bash scripts/glue.sh "$@"
if [ "$DRY_RUN" = 0 ]; then
  "$PY" aggregate_results.py nlu --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/tables" --paper
else
  echo "# then: $PY aggregate_results.py nlu --results_dir $RESULTS_DIR --out_dir $RESULTS_DIR/tables --paper"
fi
