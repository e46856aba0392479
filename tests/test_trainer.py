"""Invariants of BALoRATrainer: the plain loss at λ=0 (exact with the full LM head), zero KL at step 0, GA-invariant weights, logging.

Defaults of the arguments, TensorBoard and the logging of λ = 0 terms: test_trainer_defaults.py.
"""

import math

import pytest
import torch
from datasets import Dataset
from helpers import random_classification_dataset, random_response_dataset, sgd_cpu_args
from transformers import Trainer

from balora.adapters import AdapterConfig, prepare_model
from balora.repro.data import CausalLMCollator
from balora.repro.models import tiny_causal_lm
from balora.schedules import scheduled_lambdas
from balora.trainer import BALoRATrainer

# One SGD step on a batch of 8, without gradient clipping.
_RUN = dict(
    per_device_train_batch_size=8,
    gradient_accumulation_steps=1,
    max_steps=1,
    max_grad_norm=0.0,
    logging_steps=1,
)


def _args(tmp_path, **overrides):
    return sgd_cpu_args(tmp_path, **{**_RUN, **overrides})


def _model(method="lora", perturb=True):
    base, tokenizer = tiny_causal_lm("tiny-llama", seed=0)
    torch.manual_seed(0)  # LoRA's A is drawn from the global RNG: same initial adapter in every call
    model = prepare_model(base, AdapterConfig(method=method, r=4, alpha=4))
    if perturb:
        # Move the adapter away from its initial value so that every term has a gradient.
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name and ".default." in name:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model, tokenizer


def _batch(dataset, tokenizer):
    return CausalLMCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])


class _ForwardCounter:
    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(lambda *a: setattr(self, "calls", self.calls + 1))


@pytest.mark.parametrize("rows_only", [True, False])
def test_zero_lambdas_give_the_plain_trainer_loss_and_no_reference_forward(tmp_path, rows_only):
    """λ = 0: the Trainer's loss, bit for bit with the full LM head; with the rows-only head (the default)
    to float32 rounding (rel 1e-6: the head's matmul on N rows sums in another order than on B×T)."""
    model, tokenizer = _model()
    dataset = random_response_dataset()
    batch = _batch(dataset, tokenizer)
    plain = Trainer(model=model, args=_args(tmp_path), data_collator=CausalLMCollator(tokenizer.pad_token_id))
    ba = BALoRATrainer(
        model=model,
        args=_args(
            tmp_path,
            lambda_consistency=0.0,
            lambda_diversity=0.0,
            lambda_svd=0.0,
            rows_only_lm_head=rows_only,
        ),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
    )
    counter = _ForwardCounter(model.get_base_model().model.embed_tokens)
    model.train()
    expected = plain.compute_loss(model, dict(batch), num_items_in_batch=None)
    calls_plain = counter.calls
    got = ba.compute_loss(model, dict(batch), num_items_in_batch=None)
    if rows_only:
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    else:
        assert torch.equal(got, expected)
    assert counter.calls - calls_plain == 1, "λ = 0 must skip the reference forward"


def test_consistency_is_zero_at_step_zero_for_pissa(tmp_path):
    model, tokenizer = _model("pissa", perturb=False)
    dataset = random_response_dataset()
    args = _args(tmp_path, regularizer_preset="iclr2026", max_steps=1)
    trainer = BALoRATrainer(
        model=model, args=args, train_dataset=dataset, data_collator=CausalLMCollator(tokenizer.pad_token_id)
    )
    trainer.train()
    logged = [e for e in trainer.state.log_history if "consistency_loss" in e][0]
    assert logged["consistency_loss"] == 0.0
    # frobenius normaliser: Σ_{i≤k} σ_i / ‖X‖_F lies in [1, √k] for a matrix of rank ≥ 1
    assert logged["diversity_loss"] < 0 and -math.sqrt(10) <= logged["svd_loss"] <= -1
    assert logged["lambda_consistency"] == pytest.approx(0.025)
    assert math.isfinite(logged["task_loss"])


def _one_step_update(tmp_path, batch_size, accumulation, **reg):
    model, tokenizer = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = _args(
        tmp_path, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, **reg
    )
    trainer = BALoRATrainer(
        model=model,
        args=args,
        train_dataset=random_response_dataset(),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
    )
    trainer.train()
    return {n: p.detach() - before[n] for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "reg",
    [
        dict(lambda_consistency=0.0, lambda_diversity=0.0, lambda_svd=0.0),
        # strong weights so that a GA-dependent weight would show; svd excluded: the spectrum of a
        # 2-row micro-batch is not that of 8 rows (the term is not a mean over rows)
        dict(lambda_consistency=5.0, lambda_diversity=1.0, lambda_svd=0.0, diversity_type="entropy"),
    ],
)
def test_gradient_accumulation_4x2_equals_1x8(tmp_path, reg):
    update_ga = _one_step_update(tmp_path / "ga", 2, 4, **reg)
    update_full = _one_step_update(tmp_path / "full", 8, 1, **reg)
    for name in update_full:
        torch.testing.assert_close(update_ga[name], update_full[name], atol=1e-5, rtol=1e-3)


def test_regularizers_change_the_update(tmp_path):
    plain = _one_step_update(
        tmp_path / "a", 8, 1, lambda_consistency=0.0, lambda_diversity=0.0, lambda_svd=0.0
    )
    regularized = _one_step_update(
        tmp_path / "b", 8, 1, lambda_consistency=5.0, lambda_diversity=1.0, lambda_svd=1.0
    )
    assert max((plain[n] - regularized[n]).abs().max() for n in plain) > 1e-4


def test_iclr2026_lambda_schedule():
    base = {"consistency": 1.0, "diversity": 2.0, "svd": 3.0}
    assert scheduled_lambdas(base, "constant", 50, 100) == base
    start = scheduled_lambdas(base, "iclr2026", 0, 100)
    assert start == {"consistency": 1.0, "diversity": 0.0, "svd": 0.0}
    assert scheduled_lambdas(base, "iclr2026", 19, 100)["diversity"] == 0.0
    mid_ramp = scheduled_lambdas(base, "iclr2026", 22, 100)
    assert mid_ramp["diversity"] == pytest.approx(2.0 * 0.4) and mid_ramp["svd"] == pytest.approx(3.0 * 0.4)
    end = scheduled_lambdas(base, "iclr2026", 100, 100)
    assert end["consistency"] == pytest.approx(0.1) and end["diversity"] == 2.0


def test_preset_fills_unset_fields_and_explicit_values_win(tmp_path):
    args = _args(tmp_path, regularizer_preset="iclr2026", lambda_svd=0.5)
    assert (args.lambda_consistency, args.lambda_diversity, args.lambda_svd) == (0.025, 0.005, 0.5)
    assert (args.consistency_type, args.temperature, args.diversity_type) == ("kl", 2.0, "topk_entropy")
    assert (args.svd_top_k, args.svd_normalizer) == (10, "frobenius")
    v5 = _args(tmp_path, regularizer_preset="v5")
    assert (v5.lambda_consistency, v5.temperature, v5.diversity_type, v5.svd_normalizer) == (
        1e-4,
        1.0,
        "entropy",
        "nuclear",
    )
    nlu = _args(tmp_path, regularizer_preset="iclr2026", regularizer_task="nlu")
    assert (nlu.lambda_consistency, nlu.diversity_type, nlu.svd_top_k) == (0.15, "covariance", 5)


@pytest.mark.parametrize(
    "bad",
    [
        dict(regularizer_preset="iclr"),
        dict(lambda_svd=-1.0),
        dict(lambda_schedule="linear"),
        dict(svd_normalizer="spectral"),
    ],
)
def test_bad_regularizer_arguments_raise(tmp_path, bad):
    with pytest.raises(ValueError):
        _args(tmp_path, **bad)


def test_terms_with_zero_lambda_are_logged_too(tmp_path):
    model, tokenizer = _model()
    args = _args(tmp_path, lambda_consistency=0.1, lambda_diversity=0.0, lambda_svd=0.0)
    trainer = BALoRATrainer(
        model=model,
        args=args,
        train_dataset=random_response_dataset(),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
    )
    trainer.train()
    logged = [e for e in trainer.state.log_history if "task_loss" in e][0]
    assert logged["consistency_loss"] > 0  # the perturbed adapter differs from the reference
    assert logged["diversity_loss"] < 0 and logged["svd_loss"] < 0  # computed for the log, λ = 0
    assert (logged["lambda_diversity"], logged["lambda_svd"]) == (0.0, 0.0)


def _nlu_update(tmp_path, batch_size, accumulation):
    from torch import nn

    from balora.repro.glue import load_classifier

    model, _ = load_classifier("tiny-bert", "sst2", seed=0)
    model.apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, nn.Dropout) else None)  # deterministic
    torch.manual_seed(0)
    model = prepare_model(
        model,
        AdapterConfig(
            method="lora", r=4, alpha=4, target_modules=["query", "value"], modules_to_save=["classifier"]
        ),
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    dataset = random_classification_dataset()
    args = _args(
        tmp_path,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        regularizer_task="nlu",
        lambda_consistency=5.0,
        lambda_diversity=0.0,
        lambda_svd=0.0,
    )
    trainer = BALoRATrainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    return {n: p.detach() - before[n] for n, p in model.named_parameters() if p.requires_grad}


def test_nlu_gradient_accumulation_4x2_equals_1x8(tmp_path):
    """Classifiers: the peft wrapper must not make the Trainer skip its division by the GA steps."""
    update_ga = _nlu_update(tmp_path / "ga", 2, 4)
    update_full = _nlu_update(tmp_path / "full", 8, 1)
    for name in update_full:
        torch.testing.assert_close(update_ga[name], update_full[name], atol=1e-5, rtol=1e-3)


def test_nlu_reference_cache_skips_later_reference_forwards_and_changes_nothing(tmp_path):
    """Epoch 2 reuses epoch 1's reference logits: fewer forwards, the same training trajectory."""
    from torch import nn

    from balora.repro.glue import load_classifier

    def run(cache: bool):
        model, _ = load_classifier("tiny-bert", "sst2", seed=0)
        model.apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, nn.Dropout) else None)
        torch.manual_seed(0)
        model = prepare_model(
            model,
            AdapterConfig(
                method="pissa",
                r=4,
                alpha=4,
                target_modules=["query", "value"],
                modules_to_save=["classifier"],
            ),
        )
        counter = _ForwardCounter(model.get_base_model().bert.embeddings)
        ids = torch.randint(1000, 5000, (8, 12), generator=torch.Generator().manual_seed(2))
        dataset = Dataset.from_list(
            [{"input_ids": row[: 8 + i % 4].tolist(), "labels": i % 2} for i, row in enumerate(ids)]
        )
        from transformers import DataCollatorWithPadding

        args = _args(
            tmp_path / str(cache),
            per_device_train_batch_size=4,
            max_steps=-1,
            num_train_epochs=2,
            learning_rate=0.05,
            regularizer_task="nlu",
            regularizer_preset="iclr2026",
            cache_reference_logits=cache,
        )
        tokenizer = load_classifier("tiny-bert", "sst2")[1]
        trainer = BALoRATrainer(
            model=model, args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer)
        )
        trainer.train()
        params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return counter.calls, params

    calls_cached, cached = run(True)
    calls_plain, plain = run(False)
    assert calls_plain == 8 and calls_cached == 6  # 4 steps × (student + reference) vs 2 saved in epoch 2
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["tiny-llama", "tiny-mistral", "tiny-gemma"])
def test_rows_only_reference_and_gathered_rows_equal_the_masked_full_logits_formula(tmp_path, kind):
    """The trainer gathers the N supervised rows and applies the reference LM head to them only:
    loss and gradients must equal the docs/method.md formula on full (B, T-1, V) logits with the mask."""
    from balora.adapters import reference_mode
    from balora.regularizers import regularizer_terms
    from balora.row_capture import rows_only_head

    base, tokenizer = tiny_causal_lm(kind, seed=0)
    torch.manual_seed(0)
    model = prepare_model(base, AdapterConfig(method="pissa", r=4, alpha=4))
    with torch.no_grad():  # move the trained adapter so that KL and every gradient are non-zero
        for name, p in model.named_parameters():
            if "lora_B" in name and ".default." in name:
                p.add_(0.05 * torch.randn_like(p))
    assert rows_only_head(model) is not None, f"{kind} should take the rows-only reference head"
    dataset = random_response_dataset()
    rows = [dataset[i] for i in range(len(dataset))]
    rows[0]["labels"][6:10] = [-100] * 4  # ragged supervision: masked rows inside a response
    batch = CausalLMCollator(tokenizer.pad_token_id)(rows)
    args = _args(tmp_path, lambda_consistency=0.5, lambda_diversity=0.3, lambda_svd=0.2)
    trainer = BALoRATrainer(model=model, args=args, data_collator=CausalLMCollator(tokenizer.pad_token_id))
    model.train()
    trainer.current_gradient_accumulation_steps = 1
    got = trainer.compute_loss(model, dict(batch), num_items_in_batch=None)
    got.backward()
    got_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)

    outputs = model(**batch)
    with reference_mode(model):
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["labels"][:, 1:] != -100
    terms = regularizer_terms(outputs.logits[:, :-1], ref[:, :-1], mask, trainer._regularizer_config)
    expected = outputs.loss + 0.5 * terms["consistency"] + 0.3 * terms["diversity"] + 0.2 * terms["svd"]
    expected.backward()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for name, grad in got_grads.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad, atol=1e-5, rtol=1e-4)


def test_rows_only_reference_head_falls_back_for_models_with_logit_post_processing():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from balora.row_capture import rows_only_head

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
    assert rows_only_head(Gemma2ForCausalLM(config)) is None  # tanh soft-capping follows the head
