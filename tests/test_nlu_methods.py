"""Every method of the paper's NLU table on a tiny BERT classifier: parameter counts, what trains, and the
frozen reference (the initial model *including its head*).

Tiny BERT: H=32, FFN 64, 2 layers, 2 classes, WordPiece vocab of MiniLM (30,522).
"""

import copy

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding

from balora import adapters, bottleneck
from balora.repro import glue
from balora.trainer import BALoRATrainer, BALoRATrainingArguments

H, FFN, LAYERS, C = 32, 64, 2, 2
HEAD = H * C + C
R = 8
# (in, out) of the LoRA targets of one layer: query, key, value, attention.output.dense,
# intermediate.dense, output.dense; plus BERT's pooler.dense (matched by "dense").
LAYER_LINEARS = [(H, H)] * 4 + [(H, FFN), (FFN, H)]
LINEARS = LAYER_LINEARS * LAYERS + [(H, H)]
LORA = sum(R * (i + o) for i, o in LINEARS)
ADALORA_INIT_R = 12


def _bottleneck_params(m: int) -> int:
    return (H * m + m) + (m * H + H)


def expected_trainable(method: str, model) -> int:
    if method == "full":
        return sum(p.numel() for p in model.parameters())
    if method == "bitfit":
        biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias"))
        return biases + H * C  # + the head's weight (its bias is already a bias)
    if method in ("lora", "pissa", "ba-lora"):
        return LORA + HEAD
    if method == "dora":
        return LORA + sum(o for _, o in LINEARS) + HEAD  # + one magnitude per output feature
    if method == "loha":
        return 2 * LORA + HEAD  # two Hadamard factors, each a rank-r pair
    if method == "adalora":
        return sum(ADALORA_INIT_R * (i + o) + ADALORA_INIT_R for i, o in LINEARS) + HEAD  # A, B, E
    if method == "hadapter":
        layer_norms = (1 + 2 * LAYERS) * 2 * H  # embeddings LN + 2 per layer, weight and bias
        return 2 * LAYERS * _bottleneck_params(H // 16) + layer_norms + HEAD
    if method == "padapter":
        return LAYERS * _bottleneck_params(H // 16) + HEAD
    raise AssertionError(method)


def _tiny_data(tokenizer, n=24):
    words = "the movie was good bad great awful fine dull fun".split()
    rows = {
        "sentence1": [" ".join(words[(i + k) % len(words)] for k in range(5)) for i in range(n)],
        "label": [i % 2 for i in range(n)],
    }
    return glue.tokenize_dataset(Dataset.from_dict(rows), tokenizer, 32)


def _adapter_config(method, steps):
    name = "pissa" if method == "ba-lora" else method
    return adapters.AdapterConfig(
        method=name,
        r=R,
        alpha=R,
        target_modules=glue.default_target_modules("bert") if name in adapters.PEFT_METHODS else None,
        modules_to_save=glue.default_modules_to_save("bert"),
        reduction_factor=16,
        adalora_init_r=ADALORA_INIT_R,
        adalora_tinit=1,
        adalora_tfinal=1,
        adalora_delta_t=1,
        adalora_total_step=steps,
    )


@pytest.mark.parametrize(
    "method",
    ["full", "bitfit", "hadapter", "padapter", "lora", "loha", "dora", "adalora", "pissa", "ba-lora"],
)
def test_method_trains_only_intended_parameters_and_reference_is_initial_model(method, tmp_path):
    torch.manual_seed(0)
    model, tokenizer = glue.load_classifier("tiny-bert", "sst2", seed=0)
    data = _tiny_data(tokenizer)
    collator = DataCollatorWithPadding(tokenizer)
    batch = collator(
        [{k: data[i][k] for k in ("input_ids", "attention_mask", "token_type_ids")} for i in range(8)]
    )
    model.eval()
    with torch.no_grad():
        initial_logits = model(**batch).logits  # (8, C), the pre-trained model with its random head
    initial_state = {n: p.detach().clone() for n, p in copy.deepcopy(model).named_parameters()}

    steps = 4
    prepared = adapters.prepare_model(model, _adapter_config(method, steps))
    assert adapters.count_trainable_parameters(prepared) == expected_trainable(
        method, model if method in ("full", "bitfit") else _reload_plain()
    )
    before = {n: p.detach().clone() for n, p in prepared.named_parameters()}

    args = BALoRATrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=6,
        learning_rate=5e-3,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
        regularizer_task="nlu",
        regularizer_preset="iclr2026" if method == "ba-lora" else "none",
        label_names=["labels"],
    )
    trainer = BALoRATrainer(model=prepared, args=args, train_dataset=data, data_collator=collator)
    trainer.model_accepts_loss_kwargs = False
    trainer.train()

    changed = {n for n, p in prepared.named_parameters() if not torch.equal(p.detach(), before[n])}
    trainable = {n for n, p in prepared.named_parameters() if p.requires_grad}
    assert changed, "nothing trained"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    if method in ("hadapter", "padapter"):
        assert any(".adapter.up." in n for n in changed), "the zero-initialised up-projections must move"
    if method == "ba-lora":
        terms = [e for e in trainer.state.log_history if "consistency_loss" in e]
        assert terms and all(e["lambda_consistency"] == pytest.approx(0.15) for e in terms)
        assert all(e["svd_loss"] == pytest.approx(-1.0) for e in terms)  # C=2 <= k=5: constant (docs/nlu.md)
    if method == "adalora":
        # The trainer calls update_and_allocate each step: the budget masks some singular values to 0,
        # while the unmasked ones have moved away from their zero init.
        e_values = torch.cat([p.detach().flatten() for n, p in prepared.named_parameters() if "lora_E" in n])
        assert (e_values == 0).any() and (e_values != 0).any()

    prepared.eval()
    with torch.no_grad():
        trained_logits = prepared(**batch).logits
        with adapters.reference_mode(prepared):
            reference_logits = prepared(**batch).logits
    assert not torch.allclose(trained_logits, initial_logits, atol=1e-4)
    # The reference is the initial model including its (random) head; PiSSA's up to float rounding.
    torch.testing.assert_close(reference_logits, initial_logits, atol=2e-5, rtol=1e-4)
    # The trainable flags survive the reference forward.
    assert {n for n, p in prepared.named_parameters() if p.requires_grad} == trainable
    if method in ("full", "bitfit"):
        plain = {n: p for n, p in prepared.named_parameters()}
        assert any(not torch.equal(plain[n], initial_state[n]) for n in initial_state)


def _reload_plain():
    return glue.load_classifier("tiny-bert", "sst2", seed=0)[0]


# --- bottleneck adapters on other architectures ------------------------------------------------


@pytest.mark.parametrize(
    "kind,attention,ffn",
    [
        ("tiny-gpt2", "attn.c_proj", "mlp.c_proj"),
        ("tiny-deberta", "attention.output.dense", "output.dense"),
        ("tiny-roberta", "attention.output.dense", "output.dense"),
        ("tiny-t5", "SelfAttention.o", "DenseReluDense.wo"),
    ],
)
def test_bottleneck_layouts_identity_at_init(kind, attention, ffn):
    model, tokenizer = glue.load_classifier(kind, "rte", seed=0)
    model.eval()
    batch = tokenizer(
        ["a man is here", "two dogs run fast"],
        ["he is", "dogs run"],
        return_tensors="pt",
        padding=True,
        return_token_type_ids=False,
    )
    with torch.no_grad():
        before = model(**batch).logits
    head = glue.default_modules_to_save(model.config.model_type)
    bottleneck.add_bottleneck_adapters(model, "houlsby", reduction_factor=8, modules_to_save=head)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, bottleneck.AdaptedProjection)]
    assert any(n.endswith(attention) for n in wrapped) and any(n.endswith(ffn) for n in wrapped)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, before)  # zero up-projection: identity
        for module in model.modules():
            if isinstance(module, bottleneck.BottleneckAdapter):
                module.up.weight.normal_()
        changed = model(**batch).logits
        with bottleneck.bottleneck_reference(model):
            torch.testing.assert_close(model(**batch).logits, before)
    assert not torch.allclose(changed, before)


def test_bottleneck_errors_name_the_modules():
    from balora.repro.models import tiny_causal_lm

    llama, _ = tiny_causal_lm("tiny-llama")
    with pytest.raises(ValueError, match=r"Linear modules present: \[.*q_proj"):
        bottleneck.add_bottleneck_adapters(llama, "pfeiffer", 16)
    model, _ = glue.load_classifier("tiny-bert", "rte")
    with pytest.raises(ValueError, match="matches no module"):
        bottleneck.add_bottleneck_adapters(model, "pfeiffer", 16, modules_to_save=["score"])
    with pytest.raises(ValueError, match="style must be one of"):
        bottleneck.add_bottleneck_adapters(model, "lora", 16)


def test_lora_target_modules_missing_lists_available():
    model, _ = glue.load_classifier("tiny-bert", "rte")
    cfg = adapters.AdapterConfig(
        method="lora", r=4, alpha=4, target_modules=["q_proj"], modules_to_save=["classifier"]
    )
    with pytest.raises(ValueError, match="query"):
        adapters.prepare_model(model, cfg)
