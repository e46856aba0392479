"""Quick start of the paper: BERT-large on SST-2 with the regularisers, then the t-SNE of its features.

    python finetune_bert_l_sst2.py                       # the author's script's settings (GPU)
    python finetune_bert_l_sst2.py --recipe paper        # BA-LoRA as in the paper's BERT-L runs (PiSSA init)
    python finetune_bert_l_sst2.py --model all-minilm-l6-v2 --max_train_samples 2000   # CPU, minutes
    python tsne_visualization.py --features_dir runs/bert_l_sst2_author --output_dir runs/bert_l_sst2_author

A thin preset over finetune_glue.py. Two recipes (`--recipe`, default `author`):

* `author` (default): the settings of the author's BERT-large SST-2 example script, the README's NLU
  quick start: standard LoRA init (B = 0) with the regularisers, r = 16, α = 32 on `query` and `value`,
  dropout 0.1, lr 5e-5, 1 epoch, batch 32, 128 tokens, weight decay 0.01; the regularisers of that
  v5-era script (mse_normalized consistency, covariance diversity, nuclear SVD k = 5; λ = 0.1 / 0.01 /
  0.01: the `v5` NLU preset). What the script does not set stays at finetune_glue.py's defaults
  (linear schedule, no warmup). Trained as "lora+reg" (LoRA init + regularisers).
* `paper`: BA-LoRA as the paper describes its BERT-L runs: PiSSA init, r = 8, α = 16 on all attention
  and FFN linear layers, no dropout, lr 2e-4 (the paper's LoRA range for BERT-L is 2e-4 ... 5e-4),
  no weight decay, the same v5-era regularisers; 3 epochs and 6% warmup are our choice.

Any finetune_glue.py flag overrides the recipe (e.g. `--num_train_epochs 3`, `--method ba-lora`).
Uses the GLUE TSVs of the data folder ($BALORA_DATA_DIR/glue, default data/glue: scripts/fetch_data.py) when
they exist, else nyu-mll/glue from the hub.
"""

from __future__ import annotations

import sys
from typing import Any

from balora.cli import finetune_glue, lifecycle
from balora.repro.config import pop_flag
from balora.repro.data import data_dir

COMMON = {
    "task_name": "sst2",
    "model_name_or_path": "google-bert/bert-large-uncased",
    "regularizer_preset": "v5",
    "max_seq_length": "128",
    "per_device_train_batch_size": "32",
    "per_device_eval_batch_size": "64",
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "logging_steps": "20",  # per-term losses to TensorBoard (the default report_to) and log_history.json
    "output_dir": "runs/bert_l_sst2",
    "seed": "42",
}
RECIPES: dict[str, dict[str, str | list[str]]] = {
    # The author's example script (paper-numbers.md, "Other experiments").
    "author": {
        "method": "lora",  # standard LoRA init; with the v5 λ it trains as "lora+reg"
        "lora_r": "16",
        "lora_alpha": "32",
        "target_modules": ["query", "value"],
        "lora_dropout": "0.1",
        "num_train_epochs": "1",
        "learning_rate": "5e-5",
        "weight_decay": "0.01",
    },
    # The paper's BERT-L setting (docs/method.md §4) with PiSSA init, i.e. BA-LoRA proper.
    "paper": {
        "method": "ba-lora",
        "lora_r": "8",
        "lora_alpha": "16",
        "lora_dropout": "0.0",
        "num_train_epochs": "3",
        "learning_rate": "2e-4",
        "weight_decay": "0.0",
        "warmup_steps": "0.06",
    },
}


def _pop_recipe(argv: list[str]) -> tuple[str, list[str]]:
    """Take `--recipe NAME` / `--recipe=NAME` out of argv (it is this script's flag, not finetune_glue's)."""
    recipe, rest = pop_flag(argv, "--recipe", "a value: author | paper")
    recipe = recipe or "author"
    if recipe not in RECIPES:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}; got {recipe!r}")
    return recipe, rest


def preset_argv(argv: list[str]) -> list[str]:
    """The finetune_glue.py command line: the recipe's settings, then the user's flags (which win)."""
    recipe, argv = _pop_recipe(list(argv))
    # --model is the short form of --model_name_or_path.
    argv = ["--model_name_or_path" if a == "--model" else a for a in argv]
    argv = [("--model_name_or_path=" + a.split("=", 1)[1]) if a.startswith("--model=") else a for a in argv]
    preset: dict[str, str | list[str]] = {**COMMON, **RECIPES[recipe]}
    preset["output_dir"] = f"{COMMON['output_dir']}_{recipe}"
    if (data_dir() / "glue").is_dir():
        preset["glue_dir"] = str(data_dir() / "glue")
    out: list[str] = []
    for key, value in preset.items():
        out += [f"--{key}", *(value if isinstance(value, list) else [value])]
    return out + argv


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns finetune_glue's metrics."""
    return finetune_glue.main(preset_argv(sys.argv[1:] if argv is None else argv), description=__doc__)


def cli(argv: list[str] | None = None) -> int:
    """Console entry point `balora-finetune-bert-l-sst2`: the command line, returning the exit status."""
    return lifecycle.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
