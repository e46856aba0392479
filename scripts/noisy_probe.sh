#!/usr/bin/env bash
# Noisy-pretraining probe (v6 §3.2.2): PiSSA vs BA-LoRA on RoBERTa-base (~160 GB curated pre-training
# text) and T5-base (~750 GB C4), to see whether the regularisers help more on the model pre-trained on
# noisier data. The paper reports CoLA, MRPC and an average over an unnamed GLUE subset; ours is
# CoLA, MRPC, RTE and STS-B with each task's DeBERTa-v3-base recipe (configs/glue/<task>_<model>_<method>.yaml).
# The paper itself calls the probe suggestive, not causal (architecture and objective differ too).
#
#   bash scripts/noisy_probe.sh --dry-run
#   bash scripts/noisy_probe.sh                  # GLUE_DIR=/data/glue for the original TSVs
#
# Runs: results/noisy_probe/<task>_<model>_<method>/seed<k>/.
set -euo pipefail

# --- what users change -------------------------------------------------------------------------
MODELS=${MODELS:-"roberta-base t5-base"}
TASKS=${TASKS:-"cola mrpc rte stsb"}
METHODS=${METHODS:-"pissa ba-lora"}
SEEDS=${SEEDS:-"42 1024 2024"}
GPU=${GPU:-0}
GLUE_DIR=${GLUE_DIR:-}
# ------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_parse_args "$@"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$GPU}

glue_grid noisy_probe
lib_summary
if [ "$DRY_RUN" != 1 ]; then
  "$PY" aggregate_results.py noisy_probe --results_dir "$RESULTS_DIR" --out_dir "$RESULTS_DIR/tables" --paper
fi
