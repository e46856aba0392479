"""BALoRATrainer computes the SVD term in hidden space where the LM head is a frozen linear map: a
short training run gives the same losses, terms and weights as the logits-space term, and heads that
are trained, biased or soft-capped fall back to the logits path (and say so)."""

import logging

import pytest
import torch
from helpers import random_response_dataset, sgd_cpu_args

from balora.adapters import AdapterConfig, prepare_model
from balora.repro.data import CausalLMCollator
from balora.repro.models import tiny_causal_lm
from balora.row_capture import hidden_svd_head
from balora.trainer import BALoRATrainer

# Four SGD steps of batch 4 with the ICLR-2026 preset and an SVD term large enough to move the weights.
_RUN = dict(
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    max_steps=4,
    logging_steps=1,
    regularizer_preset="iclr2026",
    lambda_svd=0.5,
)


def _args(tmp_path, **overrides):
    return sgd_cpu_args(tmp_path, **{**_RUN, **overrides})


def _train(tmp_path, kind, hidden_enabled, **overrides):
    base, tokenizer = tiny_causal_lm(kind, seed=0)
    torch.manual_seed(0)
    model = prepare_model(base, AdapterConfig(method="pissa", r=4, alpha=4))
    trainer = BALoRATrainer(
        model=model,
        args=_args(tmp_path, **overrides),
        train_dataset=random_response_dataset(),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
    )
    trainer._hidden_svd_enabled = hidden_enabled
    trainer.train()
    history = [e for e in trainer.state.log_history if "svd_loss" in e]
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return trainer, history, weights


@pytest.mark.parametrize("kind", ["tiny-llama", "tiny-gemma"])
def test_a_short_run_gives_the_same_losses_in_hidden_and_logits_space(tmp_path, kind, caplog):
    with caplog.at_level(logging.INFO, logger="balora.trainer"):
        hidden, hidden_log, hidden_weights = _train(tmp_path / "hidden", kind, True)
    assert hidden.svd_path == "hidden space"
    assert "BA-LoRA SVD term computed in hidden space" in caplog.text
    logits, logits_log, logits_weights = _train(tmp_path / "logits", kind, False)
    assert logits.svd_path == "logits space: hidden-space path disabled"
    assert len(hidden_log) == len(logits_log) == 4
    for got, expected in zip(hidden_log, logits_log, strict=True):
        for key in ("loss", "task_loss", "consistency_loss", "diversity_loss", "svd_loss"):
            # the log rounds to 6 decimals: allow one unit of the last logged digit
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1.5e-6), key
    assert hidden_log[-1]["svd_loss"] != hidden_log[0]["svd_loss"]  # the adapter moved: a real check
    for name, weight in hidden_weights.items():
        torch.testing.assert_close(weight, logits_weights[name], rtol=1e-4, atol=1e-5)


def test_the_head_factor_is_computed_once_per_run(tmp_path, monkeypatch):
    from balora import trainer as trainer_module

    calls = []
    real = trainer_module.head_gram_factor
    monkeypatch.setattr(trainer_module, "head_gram_factor", lambda w: calls.append(1) or real(w))
    trainer, history, _ = _train(tmp_path, "tiny-llama", True)
    assert trainer.svd_path == "hidden space" and len(history) == 4 and len(calls) == 1


def test_trained_biased_or_soft_capped_heads_fall_back_to_logits_space():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    base, _ = tiny_causal_lm("tiny-llama", seed=0)
    model = prepare_model(base, AdapterConfig(method="pissa", r=4, alpha=4))
    head = model.get_base_model().lm_head
    assert hidden_svd_head(model) == (head, "hidden space")
    head.weight.requires_grad_(True)
    assert hidden_svd_head(model) == (None, "logits space: the LM head is trained")
    head.weight.requires_grad_(False)
    head.bias = torch.nn.Parameter(torch.zeros(head.out_features), requires_grad=False)
    assert hidden_svd_head(model) == (None, "logits space: the LM head has a bias")
    config = Gemma2Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=30.0,
    )
    head, path = hidden_svd_head(Gemma2ForCausalLM(config))
    assert head is None and path.startswith("logits space: the logits are not a plain linear map")


def test_reference_forward_before_the_student_gives_the_same_loss_and_gradients(tmp_path):
    """The reference runs first (its memory is then reused by the student's activations); the order
    changes nothing: same loss, same gradients as with the reference after the student's forward."""
    base, tokenizer = tiny_causal_lm("tiny-llama", seed=0)
    torch.manual_seed(0)
    model = prepare_model(base, AdapterConfig(method="pissa", r=4, alpha=4, dropout=0.1))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and ".default." in name:
                p.add_(0.05 * torch.randn_like(p))
    dataset = random_response_dataset()
    batch = CausalLMCollator(tokenizer.pad_token_id)([dataset[i] for i in range(4)])
    trainer = BALoRATrainer(
        model=model, args=_args(tmp_path), data_collator=CausalLMCollator(tokenizer.pad_token_id)
    )
    trainer.current_gradient_accumulation_steps = 1
    model.train()
    results = []
    for first in (True, False):
        trainer._reference_first = first
        torch.manual_seed(3)  # the same dropout masks in both orders
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=None)
        loss.backward()
        results.append(
            (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
        model.zero_grad(set_to_none=True)
    (loss_first, grads_first), (loss_after, grads_after) = results
    assert torch.equal(loss_first, loss_after)
    assert grads_first.keys() == grads_after.keys() and grads_first
    for name, grad in grads_first.items():
        torch.testing.assert_close(grad, grads_after[name], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["tiny-llama", "tiny-gemma"])
def test_rows_taken_at_the_head_train_bit_identically_to_gathered_rows(tmp_path, kind, monkeypatch):
    """The regulariser rows come from the LM head's output through RowsTap, whose backward adds their
    gradient at the N rows instead of autograd's B×T×V zeros-and-sum: the same sums, so four SGD
    steps at learning rate 1 (gradient accumulation 2) give identical logs and weights."""
    from balora._kernels import RowsTap

    taps = []
    real_apply = RowsTap.apply
    monkeypatch.setattr(RowsTap, "apply", lambda *a: taps.append(1) or real_apply(*a))
    runs = {}
    for tapped in (True, False):
        monkeypatch.setattr(BALoRATrainer, "_tap_rows_enabled", tapped)
        taps.clear()
        runs[tapped] = _train(
            tmp_path / str(tapped), kind, True, gradient_accumulation_steps=2, rows_only_lm_head=False
        )
        assert len(taps) == (8 if tapped else 0)  # 4 steps × 2 micro-batches
    (_, tapped_log, tapped_weights), (_, gathered_log, gathered_weights) = runs[True], runs[False]
    assert [{k: v for k, v in e.items() if k.endswith("loss")} for e in tapped_log] == [
        {k: v for k, v in e.items() if k.endswith("loss")} for e in gathered_log
    ]
    assert tapped_log[-1]["consistency_loss"] != tapped_log[0]["consistency_loss"]  # the adapter moved
    for name, weight in tapped_weights.items():
        assert torch.equal(weight, gathered_weights[name]), name
