"""`rows_only_lm_head`: the student's LM head on the N supervised rows only gives the loss, the terms and
the gradients of the full-logits forward (float rounding apart), for every method and loss normalisation,
and falls back to the full head (saying why) where the narrowing does not apply."""

import logging

import pytest
import torch
from helpers import random_response_dataset
from test_hidden_svd_trainer import _args

import balora.trainer
from balora.adapters import AdapterConfig, prepare_model
from balora.regularizers import TERMS
from balora.repro.data import CausalLMCollator
from balora.repro.models import tiny_causal_lm
from balora.trainer import BALoRATrainer, _fold


def _model(kind: str, method: str):
    base, tokenizer = tiny_causal_lm(kind, seed=0)
    torch.manual_seed(0)
    return prepare_model(base, AdapterConfig(method=method, r=4, alpha=4)), tokenizer


def _loss_and_grads(tmp_path, kind, method, rows_only, num_items, **overrides):
    model, tokenizer = _model(kind, method)
    if method == "lora":  # B = 0 at init: move it so the student differs from the reference
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    trainer = BALoRATrainer(
        model=model,
        args=_args(tmp_path, rows_only_lm_head=rows_only, **overrides),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
    )
    dataset = random_response_dataset()
    batch = CausalLMCollator(tokenizer.pad_token_id)([dataset[i] for i in range(4)])
    trainer.state.logging_steps = 1  # a logged step: λ = 0 terms are computed too
    trainer.current_gradient_accumulation_steps = 1
    model.train()
    items = None if num_items is None else torch.tensor(num_items)
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return trainer, float(loss.detach()), grads, _logged_sums(trainer)


def _logged_sums(trainer):
    """(task, *TERMS) × (sum, weight) as recorded for the next log."""
    return torch.tensor([_fold(trainer._metrics[name]) for name in ("task", *TERMS)], dtype=torch.float64)


@pytest.mark.parametrize(
    "kind, method, preset, num_items",
    [
        ("tiny-llama", "pissa", "iclr2026", None),  # BA-LoRA, mean loss
        ("tiny-llama", "pissa", "iclr2026", 37),  # BA-LoRA, loss summed over the step's items
        ("tiny-gemma", "pissa", "iclr2026", None),
        ("tiny-llama", "lora", "iclr2026", 37),  # LoRA + Reg
        ("tiny-llama", "pissa", "none", 37),  # PiSSA: no term enters the loss (λ = 0 terms only logged)
        ("tiny-mistral", "lora", "none", None),
    ],
)
def test_rows_only_head_gives_the_full_head_loss_terms_and_gradients(
    tmp_path, kind, method, preset, num_items
):
    overrides = {"regularizer_preset": preset}
    if preset == "none":
        overrides["lambda_svd"] = 0.0
    full = _loss_and_grads(tmp_path / "full", kind, method, False, num_items, **overrides)
    rows = _loss_and_grads(tmp_path / "rows", kind, method, True, num_items, **overrides)
    assert rows[0].student_head_path == "supervised rows"
    assert full[0].student_head_path == "every position: rows_only_lm_head is off"
    assert rows[1] == pytest.approx(full[1], rel=1e-5)
    # Task loss and every term (λ = 0 terms too: a logged step), as accumulated for the log.
    torch.testing.assert_close(rows[3], full[3], rtol=1e-5, atol=1e-6)
    assert full[3][1:, 0].abs().sum() > 0  # the terms were computed, so the comparison is a real one
    for name, grad in full[2].items():
        torch.testing.assert_close(rows[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_short_run_matches_and_says_which_head_ran(tmp_path, caplog, monkeypatch):
    """Also: the row path is chosen once per model and the supervised positions found once per micro-batch."""
    calls = {"choose": 0, "rows": 0}
    choose, rows_of = BALoRATrainer._choose_row_capture, balora.trainer.supervised_rows

    def count(name, real):
        return lambda *a: calls.__setitem__(name, calls[name] + 1) or real(*a)

    monkeypatch.setattr(BALoRATrainer, "_choose_row_capture", count("choose", choose))
    monkeypatch.setattr(balora.trainer, "supervised_rows", count("rows", rows_of))

    def train(rows_only):
        model, tokenizer = _model("tiny-llama", "pissa")
        trainer = BALoRATrainer(
            model=model,
            args=_args(tmp_path / str(rows_only), rows_only_lm_head=rows_only, gradient_accumulation_steps=2),
            train_dataset=random_response_dataset(),
            data_collator=CausalLMCollator(tokenizer.pad_token_id),
        )
        trainer.train()
        weights = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        return trainer, [e for e in trainer.state.log_history if "task_loss" in e], weights

    with caplog.at_level(logging.INFO, logger="balora.trainer"):
        rows, rows_log, rows_weights = train(True)
    assert "BA-LoRA student LM head applied to supervised rows" in caplog.text
    assert rows.svd_path == "hidden space"
    assert calls == {"choose": 1, "rows": 8}  # 4 steps × 2 micro-batches, every term computed in each
    full, full_log, full_weights = train(False)
    assert len(rows_log) == len(full_log) == 4
    for got, expected in zip(rows_log, full_log, strict=True):
        for key in ("loss", "task_loss", "consistency_loss", "diversity_loss", "svd_loss"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1.5e-6), key
    for name, weight in full_weights.items():
        torch.testing.assert_close(rows_weights[name], weight, rtol=1e-4, atol=1e-5)


def test_models_without_a_plain_head_keep_the_full_head_and_say_why(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    model = prepare_model(
        GPT2LMHeadModel(config), AdapterConfig(method="pissa", r=4, alpha=4, target_modules=["c_attn"])
    )
    trainer = BALoRATrainer(model=model, args=_args(tmp_path, rows_only_lm_head=True))
    assert trainer._row_capture(model, return_outputs=False).mode == "gather"
    assert trainer.student_head_path.startswith("every position: the logits are not a plain linear map")
    llama, _ = _model("tiny-llama", "pissa")
    trainer = BALoRATrainer(model=llama, args=_args(tmp_path, rows_only_lm_head=True))
    assert trainer._row_capture(llama, return_outputs=False).mode == "rows-only head"
    # A caller that asks for the outputs gets the (B, T, V) logits: the full head, rows tapped at it.
    assert trainer._row_capture(llama, return_outputs=True).mode == "row tap"
    # On by default; switched off, the full head (whose loss is Trainer.compute_loss's bit for bit).
    assert (
        BALoRATrainer(model=llama, args=_args(tmp_path))._row_capture(llama, False).mode == "rows-only head"
    )
    trainer = BALoRATrainer(model=llama, args=_args(tmp_path, rows_only_lm_head=False))
    assert trainer._row_capture(llama, return_outputs=False).mode == "row tap"
    assert trainer.student_head_path == "every position: rows_only_lm_head is off"


def test_the_supervised_rows_are_the_positions_that_predict_a_label():
    from balora.row_capture import supervised_rows

    labels = torch.tensor([[-100, 5, 6, -100], [-100, -100, -100, 7]])  # (B, T)
    rows_b, rows_t = supervised_rows(labels)
    # The logit at t predicts token t+1: rows (0, 0), (0, 1) for labels 5, 6 and (1, 2) for label 7.
    assert (rows_b.tolist(), rows_t.tolist()) == ([0, 0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="NLG training needs labels in every batch"):
        supervised_rows(None)
