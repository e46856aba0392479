"""Invariants of the adapter set-up and of the frozen reference (docs/method.md §1-§2)."""

import copy

import pytest
import torch
from peft import PeftModel

from balora import adapters
from balora.adapters import (
    AdapterConfig,
    balora_state,
    count_trainable_parameters,
    prepare_model,
    reference_mode,
)
from balora.repro.models import tiny_causal_lm


def _batch(seed=0, shape=(2, 12)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 500, shape, generator=g)


def _train_steps(model, ids, steps=3, lr=0.5):
    """A few real optimizer steps that move the trainable weights far from their initial values."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.fixture()
def base_and_original():
    base, _ = tiny_causal_lm("tiny-llama", seed=0)
    return base, copy.deepcopy(base)


@pytest.mark.parametrize("method", ["lora", "pissa", "full", "dora", "loha"])
def test_reference_equals_original_before_and_after_training(base_and_original, method):
    base, original = base_and_original
    ids = _batch()
    with torch.no_grad():
        expected = original(ids).logits
    model = prepare_model(base, AdapterConfig(method=method, r=4, alpha=4))
    with torch.no_grad():
        initial = model(ids).logits
    # PiSSA init leaves the function unchanged (up to the rounding of W_res = W - BA).
    torch.testing.assert_close(initial, expected, atol=1e-5, rtol=0)
    with reference_mode(model):
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=0)
    _train_steps(model, ids)
    with torch.no_grad():
        trained = model(ids).logits
    # Far beyond the 1e-5 tolerance of the reference checks. LoHa moves slowest (its w2_b starts at 0,
    # so the first step only trains one factor): 3 steps at lr 0.5 give ~1e-2, not more.
    assert (trained - expected).abs().max() > 1e-3, "training must move the student"
    with reference_mode(model):
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=0)


def test_reference_mode_restores_trainable_flags_and_mode(base_and_original):
    model = prepare_model(base_and_original[0], AdapterConfig(method="pissa", r=4, alpha=4))
    model.train()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    with reference_mode(model):
        assert not model.training
    assert model.training
    assert before == {n: p.requires_grad for n, p in model.named_parameters()}
    # the reference adapter never trains; the default one does
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".reference." in n)
    assert any(p.requires_grad for n, p in model.named_parameters() if ".default." in n)


def test_pissa_disabled_adapter_is_not_the_pretrained_model(base_and_original):
    """Why the reference needs the frozen initial adapter: disabling gives W_res, not W."""
    base, original = base_and_original
    ids = _batch()
    model = prepare_model(base, AdapterConfig(method="pissa", r=4, alpha=4))
    with torch.no_grad(), model.disable_adapter():
        residual_logits = model(ids).logits
    assert (residual_logits - original(ids).logits).abs().max() > 1e-2


def test_reference_holds_no_second_copy_of_base_weights(base_and_original):
    base, _ = base_and_original
    n_base = sum(p.numel() for p in base.parameters())
    for method in ("lora", "pissa"):
        fresh, _ = tiny_causal_lm("tiny-llama", seed=0)
        model = prepare_model(fresh, AdapterConfig(method=method, r=4, alpha=4))
        trainable = count_trainable_parameters(model)
        total = sum(p.numel() for p in model.parameters())
        # base + trained adapter (+ one frozen adapter copy for PiSSA), never 2× the base
        assert total == n_base + trainable * (2 if method == "pissa" else 1)
        assert balora_state(model).method == method and balora_state(model).reference_snapshot is None


def test_trainable_counts_match_the_method():
    base, _ = tiny_causal_lm("tiny-llama", seed=0)
    n_all = sum(p.numel() for p in base.parameters())
    # tiny-llama: 2 layers, hidden 64, intermediate 128, 4 heads of 16, 2 kv heads -> k/v out 32
    shapes = {
        "q_proj": (64, 64),
        "k_proj": (64, 32),
        "v_proj": (64, 32),
        "o_proj": (64, 64),
        "gate_proj": (64, 128),
        "up_proj": (64, 128),
        "down_proj": (128, 64),
    }
    r = 4
    lora_expected = 2 * sum(r * (i + o) for i, o in shapes.values())
    assert (
        count_trainable_parameters(prepare_model(base, AdapterConfig(method="lora", r=r, alpha=r)))
        == lora_expected
    )
    base, _ = tiny_causal_lm("tiny-llama", seed=0)
    assert count_trainable_parameters(prepare_model(base, AdapterConfig(method="full"))) == n_all


def test_unknown_method_and_missing_target_modules_raise(base_and_original):
    with pytest.raises(ValueError, match="Unknown method"):
        AdapterConfig(method="qlora")
    with pytest.raises(ValueError, match="Linear modules available"):
        prepare_model(base_and_original[0], AdapterConfig(method="lora", target_modules=["query", "value"]))


def test_pissa_alpha_not_r_warns():
    with pytest.warns(UserWarning, match="alpha"):
        AdapterConfig(method="pissa", r=8, alpha=16)


def test_saved_decomposition_is_reused_and_exact(tmp_path, base_and_original):
    base, original = base_and_original
    ids = _batch(1)
    cfg = AdapterConfig(method="pissa", r=4, alpha=4)
    adapters.save_pissa_init(base, cfg, tmp_path / "init")
    assert adapters.pissa_init_complete(tmp_path / "init")
    from transformers import AutoModelForCausalLM

    residual = AutoModelForCausalLM.from_pretrained(adapters.pissa_residual_path(tmp_path / "init"))
    model = prepare_model(
        residual, AdapterConfig(method="pissa", r=4, alpha=4, init_dir=str(tmp_path / "init"))
    )
    with torch.no_grad():
        expected = original(ids).logits
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=0)
    _train_steps(model, ids)
    with reference_mode(model):
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=0)


def test_pissa_conversion_applies_to_the_original_model(tmp_path, base_and_original):
    base, original = base_and_original
    ids = _batch(2)
    model = prepare_model(base, AdapterConfig(method="pissa", r=4, alpha=4))
    _train_steps(model, ids)
    with torch.no_grad():
        trained = model(ids).logits
    written = adapters.save_adapter(model, tmp_path)
    converted = PeftModel.from_pretrained(original, written["adapter_lora"])
    assert converted.peft_config["default"].r == 8  # rank 2r
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, trained, atol=1e-4, rtol=0)


def test_file_based_pissa_conversion_equals_peft_conversion(tmp_path, base_and_original):
    """Our conversion works from saved files (so after ZeRO-3 too) and matches peft's own."""
    import warnings

    from safetensors.torch import load_file

    model = prepare_model(base_and_original[0], AdapterConfig(method="pissa", r=4, alpha=4))
    _train_steps(model, _batch(3))
    written = adapters.save_adapter(model, tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(
            tmp_path / "peft",
            selected_adapters=["default"],
            path_initial_model_for_weight_conversion=str(tmp_path / "ours" / "pissa_init"),
        )
    ours = load_file(f"{written['adapter_lora']}/adapter_model.safetensors")
    theirs = load_file(tmp_path / "peft" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key])


def test_dotted_target_module_suffixes_are_accepted_as_in_peft(base_and_original):
    model = prepare_model(
        base_and_original[0], AdapterConfig(method="lora", r=2, alpha=2, target_modules=["self_attn.q_proj"])
    )
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted and all(n.endswith("self_attn.q_proj") for n in adapted)


def test_prepare_model_records_its_state_and_a_plain_peft_model_has_none():
    from peft import LoraConfig, get_peft_model

    model = prepare_model(tiny_causal_lm("tiny-llama", seed=0)[0], AdapterConfig(method="full"))
    state = balora_state(model)
    assert state.method == "full"
    assert set(state.reference_snapshot) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(model.state_dict()) == set(tiny_causal_lm("tiny-llama", seed=0)[0].state_dict())  # not saved
    plain = get_peft_model(
        tiny_causal_lm("tiny-llama", seed=0)[0], LoraConfig(r=4, target_modules=["q_proj"])
    )
    assert balora_state(plain) is None
    with pytest.raises(ValueError, match="needs a model returned by balora.adapters.prepare_model"):
        with reference_mode(plain):
            pass
    # A peft wrapper forwards unknown attributes to the model it wraps: the state of a prepared model
    # inside a wrapper built elsewhere is not the wrapper's.
    assert balora_state(get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"]))) is None


@pytest.mark.parametrize("method", ["lora", "pissa"])
def test_wrapping_a_model_prints_no_future_warning(base_and_original, method):
    """peft reads transformers' deprecated `is_gradient_checkpointing` on every model it wraps; the run's
    log must not carry that FutureWarning (it printed on every NLG run)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        prepare_model(base_and_original[0], AdapterConfig(method=method, r=4, alpha=4))


def test_adapter_arguments_give_the_adapter_config_and_recipes_name_their_adapter():
    """One set of adapter flags: α unset means α = r; a recipe (ba-lora) keeps its name and builds its
    adapter (PiSSA); a command adds settings of its own through to_config."""
    args = adapters.AdapterArguments(method="ba-lora", lora_r=16)
    assert args.method == "ba-lora" and args.adapter_method == "pissa"
    config = args.to_config(init_dir="/tmp/init")
    assert (config.method, config.r, config.alpha, config.init_dir) == ("pissa", 16, 16, "/tmp/init")
    assert adapters.AdapterArguments(method="lora", lora_r=8, lora_alpha=32.0).to_config().alpha == 32.0
    assert adapters.adapter_of("dora") == "dora"
    with pytest.raises(ValueError, match="--method must be one of .*ba-lora, got 'qlora'"):
        adapters.AdapterArguments(method="qlora")
    with pytest.raises(ValueError, match="--lora_alpha must be > 0"):
        adapters.AdapterArguments(lora_alpha=0.0)
