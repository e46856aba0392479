#!/usr/bin/env bash
# BA-LoRA across models (the paper's experiment on GSM8K and HumanEval over LLaMA-2-7/13B, LLaMA-3-8/70B,
# Mistral-7B, Gemma-7B, Qwen1.5-7B, Yi-1.5-34B, DeepSeek-MoE-16B and Mixtral-8x7B; no number of it was
# recovered): LoRA, PiSSA and BA-LoRA trained on the first 100K rows of MetaMathQA (scored on GSM8K) and
# of CodeFeedback (scored on HumanEval) with the NLG table's recipe; rank 64 for the models outside that
# table (our choice), ZeRO-3 for the 34B and 70B models (more than one node in practice).
# The two MoE models are not in the list: DeepSeek-MoE-16B loads only with remote code, and Mixtral's
# experts are fused parameter tensors in transformers 5, which LoRA cannot target as linear layers.
#
#   bash scripts/model_range.sh --dry-run
#   bash scripts/model_range.sh --grid models='llama3-8b qwen1.5-7b'
#
# Runs: results/model_range/<model>_<method>_<subset>/seed<k>/; table: aggregate_results.py model_range.
# The grid, its configs and the tables: balora/repro/studies.py (model_range); the runner: balora/repro/run.py
# (--help: --dry-run, --rehearse, --seeds, --only, --grid AXIS=VALUES, --executor local|slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run model_range "$@"
