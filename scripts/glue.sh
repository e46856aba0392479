#!/usr/bin/env bash
# GLUE grid: every task x method of the paper's NLU table for one model, seeds 42 / 1024 / 2024.
#
#   bash scripts/glue.sh --dry-run                                  # DeBERTa-v3-base, hub data (GPU)
#   GLUE_DIR=/data/glue bash scripts/glue.sh                        # original GLUE TSVs instead of the hub
#   MODEL_TAG=minilm bash scripts/glue.sh --seeds 42                # CPU mini table (MiniLM, $BALORA_DATA_DIR/glue)
#   MODEL_TAG=minilm TASKS=mrpc METHODS="lora ba-lora" bash scripts/glue.sh
#
# Each run: configs/glue/<task>_<model-tag>_<method>.yaml -> outputs/nlu/<task>_<model-tag>_<method>/seed<k>/
# (features, checkpoints) and results/nlu/<task>_<model-tag>_<method>/seed<k>/ (config.yaml, run.json,
# metrics.json, log_history.json, DONE). A run whose DONE marker exists is skipped; an interrupted one
# resumes. scripts/nlu_table.sh runs this grid for DeBERTa-v3-base and then aggregates the table.
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
MODEL_TAG=${MODEL_TAG:-deberta-v3-base}
if [ "$MODEL_TAG" = minilm ]; then
  DEFAULT_TASKS="rte mrpc sst2 cola stsb"   # the tasks whose train TSVs are in the data folder's glue/
else
  DEFAULT_TASKS="mnli sst2 mrpc cola qnli qqp rte stsb"
fi
TASKS=${TASKS:-$DEFAULT_TASKS}
METHODS=${METHODS:-"full bitfit hadapter padapter lora loha dora adalora pissa ba-lora"}
SEEDS=${SEEDS:-"42 1024 2024"}
GPU=${GPU:-0}
if [ "$MODEL_TAG" = minilm ]; then
  GLUE_DIR=${GLUE_DIR:-${BALORA_DATA_DIR:-data}/glue}   # local TSVs (python scripts/fetch_data.py)
else
  GLUE_DIR=${GLUE_DIR:-}   # empty: the nyu-mll/glue hub dataset
fi
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$GPU}

MODELS=$MODEL_TAG glue_grid nlu
lib_summary
