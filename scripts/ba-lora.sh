#!/usr/bin/env bash
# The paper's BA-LoRA rows of the NLG table: LLaMA-2-7B / Mistral-7B / Gemma-7B × MetaMathQA /
# CodeFeedback / WizardLM, seeds 42 1024 2024, DeepSpeed ZeRO-2, training + evaluation.
# The same loop as scripts/nlg_table.sh restricted to METHODS=ba-lora (override any of MODELS, SUBSETS,
# SEEDS, GPUS in the environment).
#   bash scripts/ba-lora.sh --dry-run     # print the plan
#   bash scripts/ba-lora.sh               # run; finished runs are skipped, so it resumes
set -euo pipefail
METHODS=${METHODS:-ba-lora} exec bash "$(dirname "$0")/nlg_table.sh" "$@"
