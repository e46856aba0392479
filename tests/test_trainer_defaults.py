"""Defaults of BALoRATrainingArguments and what a run logs: one source of regulariser defaults
(balora.regularizers), a required output directory, TensorBoard on by default, every term logged."""

import dataclasses
import importlib.util
import subprocess
import sys
import typing

import pytest
import torch
from helpers import ROOT, random_response_dataset
from transformers import HfArgumentParser

from balora import regularizers, trainer
from balora.adapters import AdapterConfig, prepare_model
from balora.repro.config import parse_args
from balora.repro.data import CausalLMCollator
from balora.repro.models import tiny_causal_lm
from balora.trainer import BALoRATrainer, BALoRATrainingArguments

_TINY_RUN = dict(
    per_device_train_batch_size=8,
    learning_rate=0.5,
    optim="sgd",
    lr_scheduler_type="constant",
    warmup_steps=0,
    max_grad_norm=0.0,
    weight_decay=0.0,
    use_cpu=True,
    save_strategy="no",
    seed=0,
    disable_tqdm=True,
    dataloader_num_workers=0,
)
_FORM_FIELDS = (
    "consistency_type",
    "temperature",
    "diversity_type",
    "entropy_top_k",
    "svd_top_k",
    "svd_normalizer",
)


def _args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    values.update(overrides)
    return BALoRATrainingArguments(**values)


def _forms(args):
    return tuple(getattr(args, name) for name in _FORM_FIELDS)


def test_terms_are_the_regularizers_terms():
    assert trainer.TERMS is regularizers.TERMS


@pytest.mark.parametrize("task", ["nlg", "nlu"])
@pytest.mark.parametrize("name", ["iclr2026", "v5"])
def test_a_preset_fills_every_unset_field_from_balora_regularizers(tmp_path, name, task):
    config, lambdas = regularizers.preset(name, task)
    args = _args(tmp_path, regularizer_preset=name, regularizer_task=task)
    assert args.regularizer_config() == dataclasses.replace(config, chunk_size=args.regularizer_chunk_rows)
    assert {t: getattr(args, f"lambda_{t}") for t in regularizers.TERMS} == lambdas


@pytest.mark.parametrize("task", ["nlg", "nlu"])
def test_without_a_preset_the_values_written_to_saved_configs_are_unchanged(tmp_path, task):
    """Saved configs of earlier runs are compared key by key (results.check_same_config): the resolved
    values without a preset are the ICLR-2026 NLG forms for either task, every λ 0, no eigensolver."""
    args = _args(tmp_path, regularizer_task=task)
    assert _forms(args) == ("kl", 2.0, "topk_entropy", 20, 10, "frobenius")
    assert (args.lambda_consistency, args.lambda_diversity, args.lambda_svd) == (0.0, 0.0, 0.0)
    assert args.svd_eigensolver is None
    assert args.regularizer_config() == regularizers.RegularizerConfig(task=task)


def test_the_renamed_fields_reach_the_regularizer_config(tmp_path):
    args = _args(
        tmp_path, consistency_type="mse_normalized", diversity_type="covariance", regularizer_task="nlu"
    )
    config = args.regularizer_config()
    assert (config.consistency, config.diversity) == ("mse_normalized", "covariance")


def test_every_regularizer_config_field_is_set_by_one_argument_of_its_type():
    """The arguments that set RegularizerConfig are derived from its fields: one argument per field, of
    the field's type (or None: the preset fills it), with RegularizerConfig's default where not None."""
    config_types = typing.get_type_hints(regularizers.RegularizerConfig)
    argument_types = typing.get_type_hints(BALoRATrainingArguments)
    arguments = {f.name: f for f in dataclasses.fields(BALoRATrainingArguments)}
    sets = trainer._config_arguments()
    assert sets.keys() == {f.name for f in dataclasses.fields(regularizers.RegularizerConfig)}
    assert len(set(sets.values())) == len(sets)
    for name, argument in sets.items():
        assert argument_types[argument] in (config_types[name], config_types[name] | None), argument
        if arguments[argument].default is not None:
            assert arguments[argument].default == getattr(regularizers.RegularizerConfig, name), argument


# The last commit whose BALoRATrainingArguments declared the regulariser fields and their mapping into
# RegularizerConfig by hand.
HAND_DECLARED_COMMIT = "67be53d"


@pytest.fixture(scope="module")
def hand_declared():
    """balora/trainer.py at HAND_DECLARED_COMMIT, imported as its own module."""
    shown = subprocess.run(
        ["git", "show", f"{HAND_DECLARED_COMMIT}:balora/trainer.py"], cwd=ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:
        pytest.skip(
            f"commit {HAND_DECLARED_COMMIT} is not in this checkout's history: {shown.stderr.strip()}"
        )
    name = f"balora_trainer_{HAND_DECLARED_COMMIT}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module  # dataclasses resolve the fields' annotations through sys.modules
    exec(compile(shown.stdout, f"{HAND_DECLARED_COMMIT}:balora/trainer.py", "exec"), module.__dict__)
    yield module
    del sys.modules[name]


def _parser_actions(arguments_class) -> list[tuple]:
    """Each flag's argparse action; a type made per parser (an enum's choice function) by its name."""
    keys = ("option_strings", "dest", "default", "help", "choices", "nargs", "const", "required")
    return [
        (
            *(getattr(a, k) for k in keys),
            a.type if isinstance(a.type, type) else getattr(a.type, "__qualname__", a.type),
        )
        for a in HfArgumentParser(arguments_class)._actions
    ]


def test_the_command_line_is_the_hand_declared_one(hand_declared):
    """Every flag keeps its name, default, type, help and place."""
    expected = _parser_actions(hand_declared.BALoRATrainingArguments)
    assert _parser_actions(BALoRATrainingArguments) == expected
    assert len(expected) > 100  # TrainingArguments' flags and ours


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"regularizer_task": "nlu"},
        {"regularizer_preset": "iclr2026"},
        {"regularizer_preset": "v5", "regularizer_task": "nlu", "lambda_svd": 0.0, "temperature": 1.0},
        {"regularizer_preset": "iclr2026", "svd_eigensolver": "lobpcg", "regularizer_chunk_rows": 7},
        {"consistency_type": "mse_normalized", "diversity_type": "covariance", "svd_top_k": 3},
        {"svd_normalizer": "nuclear", "entropy_top_k": 5, "svd_eigensolver": ""},
    ],
)
def test_the_resolved_arguments_and_regularizer_config_are_the_hand_declared_ones(
    hand_declared, tmp_path, overrides
):
    got = _args(tmp_path, **overrides)
    expected = hand_declared.BALoRATrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, **overrides
    )
    assert dataclasses.asdict(got) == dataclasses.asdict(expected)
    assert got.regularizer_config() == expected.regularizer_config()


@pytest.mark.parametrize(
    "overrides",
    [
        {"regularizer_chunk_rows": None},
        {"regularizer_task": None},
        {"svd_eigensolver": "qr"},
        {"temperature": 0.0},
    ],
)
def test_bad_regularizer_arguments_are_refused_as_before(hand_declared, tmp_path, overrides):
    with pytest.raises(ValueError) as expected:
        hand_declared.BALoRATrainingArguments(
            output_dir=str(tmp_path), report_to="none", use_cpu=True, **overrides
        )
    with pytest.raises(ValueError) as got:
        _args(tmp_path, **overrides)
    assert str(got.value) == str(expected.value)


def test_output_dir_is_required(tmp_path):
    with pytest.raises(ValueError, match="pass --output_dir"):
        BALoRATrainingArguments(report_to="none")
    with pytest.raises(ValueError, match="pass --output_dir"):
        parse_args((BALoRATrainingArguments,), ["--use_cpu"])
    assert parse_args((BALoRATrainingArguments,), ["--output_dir", str(tmp_path)])[0].output_dir == str(
        tmp_path
    )


def test_report_to_defaults_to_tensorboard_and_an_explicit_value_wins(tmp_path):
    assert BALoRATrainingArguments(output_dir=str(tmp_path)).report_to == ["tensorboard"]
    assert _args(tmp_path, report_to="none").report_to == []
    (args,) = parse_args((BALoRATrainingArguments,), ["--output_dir", str(tmp_path)])
    assert args.report_to == ["tensorboard"]
    (args,) = parse_args((BALoRATrainingArguments,), ["--output_dir", str(tmp_path), "--report_to", "none"])
    assert args.report_to == []


def _pissa_model():
    base, tokenizer = tiny_causal_lm("tiny-llama", seed=0)
    torch.manual_seed(0)
    model = prepare_model(base, AdapterConfig(method="pissa", r=4, alpha=4))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the trained adapter away from the reference: every term is non-trivial
        for name, p in model.named_parameters():
            if "lora_B" in name and ".default." in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model, tokenizer


def _train(tmp_path, model, tokenizer, **overrides):
    values = dict(output_dir=str(tmp_path), max_steps=3, logging_steps=1, report_to="none", **_TINY_RUN)
    values.update(overrides)
    run = BALoRATrainer(
        model=model,
        args=BALoRATrainingArguments(**values),
        train_dataset=random_response_dataset(),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
    )
    run.train()
    return run


def test_tensorboard_events_hold_every_term(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, tokenizer = _pissa_model()
    values = dict(
        output_dir=str(tmp_path),
        max_steps=2,
        logging_steps=1,
        lambda_consistency=0.1,
        lambda_diversity=0.0,
        lambda_svd=0.05,
        **_TINY_RUN,
    )
    run = BALoRATrainer(
        model=model,
        args=BALoRATrainingArguments(**values),
        train_dataset=random_response_dataset(),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
    )
    assert run.args.report_to == ["tensorboard"]
    run.train()
    event_files = list((tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert len(event_files) == 1
    events = EventAccumulator(str(event_files[0].parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for name in ("task_loss", "consistency_loss", "diversity_loss", "svd_loss", "lambda_diversity"):
        assert f"train/{name}" in tags, sorted(tags)
    logged = [e for e in run.state.log_history if "task_loss" in e]
    steps = [s.step for s in events.Scalars("train/diversity_loss")]
    assert steps == [1, 2]
    assert events.Scalars("train/svd_loss")[-1].value == pytest.approx(logged[-1]["svd_loss"], rel=1e-6)


def test_zero_lambda_terms_are_logged_at_full_precision_without_changing_training(tmp_path):
    """The 'w/o consistency' ablation: the consistency term is logged from the reference, at logging
    steps only, and the trained weights are those of a run that logs nothing."""
    model, tokenizer = _pissa_model()
    embed = model.get_base_model().model.embed_tokens
    calls = []
    embed.register_forward_hook(lambda *a: calls.append(1))
    logged_run = _train(
        tmp_path / "a",
        model,
        tokenizer,
        lambda_consistency=0.0,
        lambda_diversity=0.5,
        lambda_svd=0.0,
        logging_steps=2,
    )
    # 3 student forwards + 1 reference forward (step 2, the only logged step)
    assert len(calls) == 4
    logged = [e for e in logged_run.state.log_history if "task_loss" in e]
    assert len(logged) == 1 and logged[0]["consistency_loss"] > 0 and logged[0]["svd_loss"] < 0
    values = [logged[0][f"{t}_loss"] for t in ("task", "consistency", "diversity", "svd")]
    assert any(v != round(v, 6) for v in values), "terms are logged unrounded"
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    model, tokenizer = _pissa_model()
    _train(
        tmp_path / "b",
        model,
        tokenizer,
        lambda_consistency=0.0,
        lambda_diversity=0.5,
        lambda_svd=0.0,
        logging_steps=100,
    )
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), trained[name]), name


@pytest.mark.parametrize("rows_only", [True, False])
def test_all_zero_lambdas_log_every_term_and_keep_the_plain_loss(tmp_path, rows_only):
    """The plain loss: bit for bit with the full LM head, to float32 rounding (rel 1e-6) with the
    rows-only head (the default), whose matmul on N rows sums in another order."""
    from transformers import Trainer

    model, tokenizer = _pissa_model()
    run = BALoRATrainer(
        model=model,
        args=_args(tmp_path, logging_steps=1, rows_only_lm_head=rows_only),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
    )
    plain = Trainer(model=model, args=_args(tmp_path), data_collator=CausalLMCollator(tokenizer.pad_token_id))
    dataset = random_response_dataset()
    batch = CausalLMCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])
    run.state.logging_steps = 1  # as train() sets it: this micro-batch belongs to a logged step
    model.train()
    got, expected = run.compute_loss(model, dict(batch)), plain.compute_loss(model, dict(batch))
    if rows_only:
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    else:
        assert torch.equal(got, expected)
    assert all(len(run._metrics[t]) == 1 for t in trainer.TERMS)  # every term computed for the log


def test_a_plain_peft_model_logs_the_terms_that_need_no_reference(tmp_path):
    from peft import LoraConfig, get_peft_model

    base, tokenizer = tiny_causal_lm("tiny-llama", seed=0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj"]))
    run = _train(tmp_path, model, tokenizer, max_steps=1, lambda_diversity=0.1)
    logged = [e for e in run.state.log_history if "task_loss" in e][0]
    assert "diversity_loss" in logged and "svd_loss" in logged and "consistency_loss" not in logged


@pytest.mark.parametrize(
    "run",
    [
        "results/mini/rank_sweep/smollm2_pissa_r4",  # NLG, recorded rows_only_lm_head: false
        "results/mini/ablation/mrpc_consistency",  # NLU, one seed recorded before the field existed
    ],
)
def test_a_seed_trained_with_the_rows_only_default_joins_a_committed_run(tmp_path, repo_root, run):
    """The committed runs were trained with the full LM head (`rows_only_lm_head: false`, or no such key);
    a seed run now records the default, true. The head changes the loss by float rounding only, so
    results.check_same_config counts that seed as one more seed of the same run."""
    from balora.repro.results import check_same_config, load_run

    assert BALoRATrainingArguments(output_dir=str(tmp_path), report_to="none").rows_only_lm_head is True
    seeds = list(load_run(repo_root / run)[0].values())
    assert len(seeds) >= 2 and all(not s.config.get("rows_only_lm_head", False) for s in seeds)
    config = {**seeds[0].config, "seed": 7, "rows_only_lm_head": True}
    check_same_config(run, [*seeds, dataclasses.replace(seeds[0], seed=7, config=config)])


def test_a_full_fine_tune_under_zero3_has_no_swapped_reference(tmp_path):
    """Full fine-tuning (and BitFit) computes its reference by swapping in a copy of the initial weights, which
    ZeRO-3 partitions: with λ1 > 0 the trainer refuses at once (naming ZeRO-2); with λ1 = 0 it trains without
    the log-only consistency term instead of failing at the first logged step (the rehearsed Gemma Full FT
    row under ZeRO-3 did). The ZeRO-3 switch is transformers' own global DeepSpeed config."""
    from transformers.integrations.deepspeed import (
        HfDeepSpeedConfig,
        set_hf_deepspeed_config,
        unset_hf_deepspeed_config,
    )

    from balora.adapters import reference_is_partitioned

    base, tokenizer = tiny_causal_lm("tiny-llama")
    full = prepare_model(base, AdapterConfig(method="full"))
    assert not reference_is_partitioned(full)
    zero3 = HfDeepSpeedConfig(str(ROOT / "configs" / "deepspeed" / "zero3.json"))  # registers itself
    set_hf_deepspeed_config(zero3)
    try:
        assert reference_is_partitioned(full)
        with pytest.raises(ValueError, match="ZeRO-3 partitions: train it under ZeRO-2"):
            BALoRATrainer(model=full, args=_args(tmp_path / "a", lambda_consistency=0.1))
        quiet = BALoRATrainer(model=full, args=_args(tmp_path / "b", regularizer_preset="none"))
        assert not quiet._has_reference
    finally:
        unset_hf_deepspeed_config()
    pissa, _ = tiny_causal_lm("tiny-llama")
    assert not reference_is_partitioned(prepare_model(pissa, AdapterConfig(method="pissa", r=4, alpha=4)))
