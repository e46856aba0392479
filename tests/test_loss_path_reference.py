"""The loss path trains bit-identically to BALoRATrainer as of commit c5f883e, for each way the student's
supervised rows are taken (balora.row_capture): the LM head applied to the rows only, the rows tapped at
the head's output, a gather of the returned logits (tiny LLaMA and tiny Gemma), and an NLU classifier
(tiny BERT), whose rows are the examples. Same machine, same process, so the comparison is exact: the
adapter weights after a few SGD steps (gradient accumulation 2) and every logged loss and term.

The reference trainer is read from the git history (`git show c5f883e:balora/trainer.py`); without
that history (an archive, a shallow clone) these tests skip.
"""

import importlib.util
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, random_classification_dataset, random_response_dataset, sgd_cpu_args

from balora import trainer as current
from balora.adapters import AdapterConfig, prepare_model
from balora.repro.data import CausalLMCollator
from balora.repro.models import tiny_causal_lm

REFERENCE_COMMIT = "c5f883e"
# Log keys that measure time, not training.
_TIMING_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}


@pytest.fixture(scope="module")
def reference():
    """balora/trainer.py at REFERENCE_COMMIT, imported as its own module."""
    shown = subprocess.run(
        ["git", "show", f"{REFERENCE_COMMIT}:balora/trainer.py"], cwd=ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:
        pytest.skip(f"commit {REFERENCE_COMMIT} is not in this checkout's history: {shown.stderr.strip()}")
    name = f"balora_trainer_{REFERENCE_COMMIT}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module  # dataclasses resolve the fields' annotations through sys.modules
    exec(compile(shown.stdout, f"{REFERENCE_COMMIT}:balora/trainer.py", "exec"), module.__dict__)
    yield module
    del sys.modules[name]


# Two SGD steps of batch 4, each accumulated over 2 micro-batches.
_RUN = dict(
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    max_steps=2,
    logging_steps=2,  # λ > 0 terms averaged over 2 steps, λ = 0 ones over the logged step
)


def _args(module, tmp_path, **overrides):
    return sgd_cpu_args(tmp_path, module.BALoRATrainingArguments, **{**_RUN, **overrides})


def _result(trainer, model):
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    logs = [{k: v for k, v in e.items() if k not in _TIMING_KEYS} for e in trainer.state.log_history]
    return weights, logs


def _train_nlg(module, tmp_path, kind, path):
    base, tokenizer = tiny_causal_lm(kind, seed=0)
    torch.manual_seed(0)
    model = prepare_model(base, AdapterConfig(method="pissa", r=4, alpha=4))
    args = _args(
        module,
        tmp_path,
        regularizer_preset="iclr2026",
        lambda_diversity=0.0,  # logged only: computed without gradients on the logged steps
        lambda_svd=0.5,
        rows_only_lm_head=path == "rows-only head",
    )
    trainer = module.BALoRATrainer(
        model=model,
        args=args,
        train_dataset=random_response_dataset(),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
    )
    trainer._tap_rows_enabled = path != "gather"
    trainer.train()
    return _result(trainer, model)


def _train_nlu(module, tmp_path):
    from torch import nn

    from balora.repro.glue import load_classifier

    model, _ = load_classifier("tiny-bert", "sst2", seed=0)
    model.apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, nn.Dropout) else None)
    torch.manual_seed(0)
    model = prepare_model(
        model,
        AdapterConfig(
            method="pissa", r=4, alpha=4, target_modules=["query", "value"], modules_to_save=["classifier"]
        ),
    )
    dataset = random_classification_dataset()
    args = _args(
        module,
        tmp_path,
        learning_rate=0.05,
        regularizer_task="nlu",
        regularizer_preset="iclr2026",
        lambda_svd=0.0,  # logged only
    )
    trainer = module.BALoRATrainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    return _result(trainer, model)


def _assert_identical(got, expected):
    (got_weights, got_logs), (expected_weights, expected_logs) = got, expected
    assert got_logs == expected_logs
    assert any("consistency_loss" in e for e in got_logs), "the terms were logged: a real comparison"
    assert got_weights.keys() == expected_weights.keys() and got_weights
    for name, weight in expected_weights.items():
        assert torch.equal(got_weights[name], weight), name


@pytest.mark.parametrize("path", ["rows-only head", "row tap", "gather"])
@pytest.mark.parametrize("kind", ["tiny-llama", "tiny-gemma"])
def test_nlg_training_is_bit_identical_to_the_reference_trainer(reference, tmp_path, kind, path):
    expected = _train_nlg(reference, tmp_path / "reference", kind, path)
    got = _train_nlg(current, tmp_path / "current", kind, path)
    _assert_identical(got, expected)


def test_nlu_training_is_bit_identical_to_the_reference_trainer(reference, tmp_path):
    expected = _train_nlu(reference, tmp_path / "reference")
    got = _train_nlu(current, tmp_path / "current")
    _assert_identical(got, expected)
