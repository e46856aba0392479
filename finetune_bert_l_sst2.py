"""Quick start of the paper: BERT-large on SST-2 with BA-LoRA, then the t-SNE of its features.

    python finetune_bert_l_sst2.py                       # BERT-large from the hub (GPU)
    python finetune_bert_l_sst2.py --model all-minilm-l6-v2 --max_train_samples 2000   # CPU, minutes
    python tsne_visualization.py --features_dir runs/bert_l_sst2_ba-lora --output_dir runs/bert_l_sst2_ba-lora

A thin preset over finetune_glue.py: BA-LoRA = PiSSA init, r = 8, α = 16 (the paper's BERT-L setting),
the v5-era BERT-L SST-2 regularisers (mse_normalized consistency, covariance diversity, nuclear SVD k=5;
λ = 0.1 / 0.01 / 0.01), lr 2e-4 (the paper's LoRA range for BERT-L is 2e-4 ... 5e-4), 3 epochs of batch
32 at 128 tokens (epochs and batch: our choice). Any finetune_glue.py flag overrides the preset.
Uses ../shared/data/glue when that folder exists, else nyu-mll/glue from the hub.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import finetune_glue

REPO_ROOT = Path(__file__).resolve().parent
SHARED_GLUE = REPO_ROOT.parent / "shared" / "data" / "glue"

PRESET = {
    "task_name": "sst2",
    "model_name_or_path": "google-bert/bert-large-uncased",
    "method": "ba-lora",
    "lora_r": "8",
    "lora_alpha": "16",
    "regularizer_preset": "v5",
    "max_seq_length": "128",
    "num_train_epochs": "3",
    "per_device_train_batch_size": "32",
    "per_device_eval_batch_size": "64",
    "learning_rate": "2e-4",
    "warmup_steps": "0.06",
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "logging_steps": "20",
    "report_to": "none",
    "output_dir": "runs/bert_l_sst2_ba-lora",
    "seed": "42",
}


def preset_argv(argv: list[str]) -> list[str]:
    """The finetune_glue.py command line: the preset, then the user's flags (which win)."""
    argv = list(argv)
    # --model is the short form of --model_name_or_path.
    argv = ["--model_name_or_path" if a == "--model" else a for a in argv]
    argv = [("--model_name_or_path=" + a.split("=", 1)[1]) if a.startswith("--model=") else a for a in argv]
    preset = dict(PRESET)
    if SHARED_GLUE.is_dir():
        preset["glue_dir"] = str(SHARED_GLUE)
    out = []
    for key, value in preset.items():
        out += [f"--{key}", value]
    return out + argv


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the preset; returns finetune_glue's metrics."""
    return finetune_glue.main(preset_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
