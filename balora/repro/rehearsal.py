"""The rehearsal of the paper path: every paper model and hub dataset mapped to a small local stand-in.

`bash scripts/<script>.sh --rehearse` (and `bash scripts/rehearse.sh` for all of them) sets
BALORA_REHEARSAL=1. Then, and only then, the loaders of the entry scripts replace:

* each paper model id by a tiny random-init model of the same architecture family and tokenizer kind
  (LLaMA, Mistral, Gemma causal LMs with a byte-level BPE; DeBERTa-v2, BERT, RoBERTa, GPT-2, T5
  classifiers with a WordPiece vocabulary), built in code from a fixed seed;
* each hub dataset by a small JSONL fixture under balora/repro/hub_fixtures/ (package data, so an
  installed package rehearses too) with the hub dataset's exact column names and types
  (tests/fixtures/make_hub_fixtures.py writes them).

The paper configs and scripts run unmodified, so a config that names a wrong field, a wrong dataset or
a wrong rank fails the rehearsal exactly as it would fail on the real data. A model or dataset id that
has no stand-in is an error during a rehearsal (never a silent download).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REHEARSAL_ENV = "BALORA_REHEARSAL"
FIXTURE_DIR = Path(__file__).resolve().parent / "hub_fixtures"

# Paper model id -> stand-in of the same family (balora.repro.models.TINY_CAUSAL_LMS, balora.repro.glue.TINY_CLASSIFIERS).
MODEL_STANDINS = {
    "meta-llama/Llama-2-7b-hf": "tiny-llama-256",
    "mistralai/Mistral-7B-v0.1": "tiny-mistral-256",
    "google/gemma-7b": "tiny-gemma-256",
    # The model range (scripts/model_range.sh): LLaMA-architecture models (Qwen1.5 adds q/k/v biases).
    "meta-llama/Llama-2-13b-hf": "tiny-llama-256",
    "meta-llama/Meta-Llama-3-8B": "tiny-llama-256",
    "meta-llama/Meta-Llama-3-70B": "tiny-llama-256",
    "Qwen/Qwen1.5-7B": "tiny-llama-256",
    "01-ai/Yi-1.5-34B": "tiny-llama-256",
    "microsoft/deberta-v3-base": "tiny-deberta",
    "bert-large-uncased": "tiny-bert",
    "bert-large-cased": "tiny-bert",
    "google-bert/bert-large-uncased": "tiny-bert",
    "google-bert/bert-large-cased": "tiny-bert",
    "gpt2-xl": "tiny-gpt2",
    "openai-community/gpt2-xl": "tiny-gpt2",
    "roberta-base": "tiny-roberta",
    "FacebookAI/roberta-base": "tiny-roberta",
    # The RoBERTa-large NLU grid (configs/glue/*_roberta-large_*.yaml).
    "roberta-large": "tiny-roberta",
    "FacebookAI/roberta-large": "tiny-roberta",
    "t5-base": "tiny-t5",
    "google-t5/t5-base": "tiny-t5",
}

# Hub dataset id -> fixture folder: <folder>/<config or data_dir, "default" if none>/<split>.jsonl.
DATASET_STANDINS = {
    "fxmeng/pissa-dataset": "fxmeng__pissa-dataset",
    "meta-math/MetaMathQA": "meta-math__MetaMathQA",
    "nyu-mll/glue": "nyu-mll__glue",
    "openai/gsm8k": "openai__gsm8k",
    "hendrycks/competition_math": "hendrycks__competition_math",
    "google-research-datasets/mbpp": "google-research-datasets__mbpp",
    "HuggingFaceH4/mt_bench_prompts": "HuggingFaceH4__mt_bench_prompts",
}


def active() -> bool:
    """True inside a rehearsal (BALORA_REHEARSAL=1)."""
    return os.environ.get(REHEARSAL_ENV, "") not in ("", "0")


def model_name(name_or_path: str) -> str:
    """The model to load for `name_or_path`: its stand-in during a rehearsal, else itself.

    Raises:
        ValueError: in a rehearsal, a hub-looking id ("owner/name") that is neither a local path nor mapped.
    """
    if not active():
        return name_or_path
    if name_or_path in MODEL_STANDINS:
        return MODEL_STANDINS[name_or_path]
    if "/" in name_or_path and not Path(name_or_path).exists() and not name_or_path.startswith((".", "/")):
        raise ValueError(
            f"rehearsal: no stand-in for the model {name_or_path!r}; add it to "
            f"balora/repro/rehearsal.py MODEL_STANDINS"
        )
    return name_or_path


def load_hub_dataset(hub_id: str, config: str | None = None, *, split: str, data_dir: str | None = None):
    """`datasets.load_dataset(hub_id, config, data_dir=..., split=...)`, or its fixture in a rehearsal.

    Args:
        hub_id: e.g. "nyu-mll/glue", "fxmeng/pissa-dataset".
        config: the dataset's config name ("main", "sst2", ...), if any.
        split: the split name, without slicing ("train", "validation_matched", ...).
        data_dir: the hub sub-directory (fxmeng/pissa-dataset: metamath | python | conversation).

    Returns:
        A `datasets.Dataset`.
    """
    import datasets

    if not active():
        kwargs: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
        return datasets.load_dataset(hub_id, config, split=split, **kwargs)
    if hub_id not in DATASET_STANDINS:
        raise ValueError(
            f"rehearsal: no fixture for the hub dataset {hub_id!r}; add one to "
            f"balora/repro/rehearsal.py DATASET_STANDINS (and tests/fixtures/make_hub_fixtures.py)"
        )
    folder = FIXTURE_DIR / DATASET_STANDINS[hub_id] / (config or data_dir or "default")
    path = folder / f"{split}.jsonl"
    if not path.exists():
        available = (
            sorted(p.name for p in FIXTURE_DIR.joinpath(DATASET_STANDINS[hub_id]).iterdir())
            if FIXTURE_DIR.joinpath(DATASET_STANDINS[hub_id]).is_dir()
            else []
        )
        raise ValueError(
            f"rehearsal: {hub_id} has no config/subset/split {config or data_dir or 'default'}/"
            f"{split} (fixture {path} missing; subsets with fixtures: {available})"
        )
    return datasets.load_dataset("json", data_files={split: str(path)}, split=split)
