"""Generation end to end: batching equals one-at-a-time, resumability, adapters (PiSSA rule), real CLIs."""

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from helpers import load_script  # noqa: E402

from balora.eval.generation import (
    DecodingConfig,
    Generator,
    check_adapter_base,
    generate_hf,
    generate_to_file,
    is_unconverted_pissa_adapter,
    load_model,
    truncate_at_stop,
)
from balora.repro.models import tiny_causal_lm
from balora.repro.prompts import format_prompt

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["how many apples", "what is the sum of 2 and 3 and then more numbers", "hi", "def f"]


def test_truncate_at_stop():
    assert truncate_at_stop("a ### Response: b ### Instruction", ["### Instruction", "### Response"]) == "a "
    assert truncate_at_stop("plain", ["###"]) == "plain"


def test_batched_left_padded_generation_equals_one_at_a_time():
    model, tokenizer = load_model("tiny-llama")
    prompts = [format_prompt(q) for q in QUESTIONS]
    batched = generate_hf(model, tokenizer, prompts, DecodingConfig(max_new_tokens=12, batch_size=4))
    single = [
        generate_hf(model, tokenizer, [p], DecodingConfig(max_new_tokens=12, batch_size=1))[0]
        for p in prompts
    ]
    assert batched == single
    assert tokenizer.padding_side == "left"


def test_generate_to_file_resumes_and_skips_done(tmp_path):
    cfg = DecodingConfig(max_new_tokens=6, batch_size=2)
    generator = Generator("tiny-llama", None, cfg)
    seen = []

    def counting(prompts, progress=None):
        seen.append(len(prompts))
        return generator(prompts, progress)

    items = [(str(i), format_prompt(q)) for i, q in enumerate(QUESTIONS)]
    path = tmp_path / "completions.jsonl"
    first = generate_to_file(counting, items[:2], path, cfg)
    with open(path, "a") as handle:
        handle.write('{"key": "2", "compl')  # an interrupted write
    resumed = generate_to_file(counting, items, path, cfg)
    assert seen == [2, 2]  # only the two missing prompts were generated again
    assert [resumed[k] for k in ("0", "1")] == [first["0"], first["1"]]
    fresh = generate_to_file(generator, items, tmp_path / "fresh.jsonl", cfg)
    assert resumed == fresh
    assert len(path.read_text().splitlines()) == 4
    generate_to_file(counting, items, path, cfg)
    assert seen == [2, 2]  # all cached: nothing generated
    with pytest.raises(ValueError, match="other decoding settings"):
        generate_to_file(counting, items, path, DecodingConfig(max_new_tokens=7))


def _save_tiny(directory: Path):
    model, tokenizer = tiny_causal_lm("tiny-llama")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


def test_pissa_adapter_refused_on_original_base_and_exact_on_residual(tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_causal_lm("tiny-llama")
    original_ids = tokenizer(["how many apples"], return_tensors="pt")["input_ids"]
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights="pissa")
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.add_(0.05)  # "training": move the adapter away from its initial value
        expected = peft_model(original_ids).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    assert is_unconverted_pissa_adapter(tmp_path / "adapter")
    residual = peft_model.unload()
    residual.save_pretrained(tmp_path / "init" / "residual_model")
    tokenizer.save_pretrained(tmp_path / "init" / "residual_model")
    _save_tiny(tmp_path / "original")
    with pytest.raises(ValueError, match="unconverted PiSSA adapter.*adapter_lora"):
        check_adapter_base(str(tmp_path / "original"), tmp_path / "adapter")
    with pytest.raises(ValueError, match="unconverted PiSSA"):
        load_model(str(tmp_path / "original"), str(tmp_path / "adapter"))
    with warnings.catch_warnings():
        # peft reads transformers' deprecated is_gradient_checkpointing: a FutureWarning on every load
        warnings.simplefilter("error", FutureWarning)
        loaded, _ = load_model(str(tmp_path / "init" / "residual_model"), str(tmp_path / "adapter"))
    with torch.no_grad():
        got = loaded(original_ids).logits
    # Loading must not decompose the residual a second time: same function as the trained model.
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_run_directory_pissa_adapter_detected_from_config(tmp_path):
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_causal_lm("tiny-llama")
    run = tmp_path / "run"
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(run / "adapter")
    get_peft_model(
        tiny_causal_lm("tiny-llama")[0], LoraConfig(r=4, target_modules=["q_proj"])
    ).save_pretrained(run / "adapter_lora")
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "pissa", "lora_r": 2}))
    assert is_unconverted_pissa_adapter(run / "adapter")  # init_dir flow saves init_lora_weights=True
    assert not is_unconverted_pissa_adapter(run / "adapter_lora")
    check_adapter_base("/models/original", run / "adapter_lora")
    # A BA-LoRA run trains a PiSSA adapter as well (it was missed when only `pissa` was checked).
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "ba-lora", "lora_r": 2}))
    assert is_unconverted_pissa_adapter(run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "lora"}))
    assert not is_unconverted_pissa_adapter(run / "adapter")


def test_lora_adapter_save_load_same_outputs(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = _save_tiny(tmp_path / "base")
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter_lora")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = peft_model(ids).logits
        loaded, _ = load_model(str(tmp_path / "base"), str(tmp_path / "adapter_lora"))
        torch.testing.assert_close(loaded(ids).logits, expected)
        plain, _ = load_model(str(tmp_path / "base"))
        assert not torch.allclose(plain(ids).logits, expected)


def test_gsm8k_cli_generates_with_tiny_model_and_resumes(tmp_path):
    argv = [
        "--model",
        "tiny-llama",
        "--data",
        str(FIXTURES / "gsm8k_tiny.jsonl"),
        "--max_new_tokens",
        "8",
        "--batch_size",
        "2",
        "--output_dir",
        str(tmp_path),
    ]
    metrics = load_script("gsm8k").main(argv)
    assert metrics["n"] == 3 and metrics["settings"]["mode"] == "generate"
    assert (
        metrics["settings"]["decoding"]["max_new_tokens"] == 8
        and metrics["settings"]["decoding"]["temperature"] == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [0, 1, 2] and all(isinstance(r["completion"], str) for r in rows)
    before = (tmp_path / "completions.jsonl").read_text()
    again = load_script("gsm8k").main(argv)
    assert (tmp_path / "completions.jsonl").read_text() == before
    assert again["score"] == metrics["score"]


def test_code_and_mt_bench_clis_generate_with_tiny_model(tmp_path):
    metrics = load_script("humaneval").main(
        [
            "--model",
            "tiny-llama",
            "--data",
            str(FIXTURES / "humaneval_tiny.jsonl"),
            "--max_new_tokens",
            "8",
            "--output_dir",
            str(tmp_path / "he"),
        ]
    )
    assert metrics["n"] == 2 and metrics["score"] == 0.0  # random weights write no working code
    mt = load_script("mt_bench").main(
        [
            "--model",
            "tiny-llama",
            "--data",
            str(FIXTURES / "mt_bench_questions.jsonl"),
            "--max_new_tokens",
            "6",
            "--judge_turns",
            "0",
            "--output_dir",
            str(tmp_path / "mt"),
        ]
    )
    rows = [json.loads(line) for line in (tmp_path / "mt" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["completion"]) == 2 for r in rows) and mt["score"] is None
    keys = [
        json.loads(line)["key"] for line in (tmp_path / "mt" / "completions.jsonl").read_text().splitlines()
    ]
    assert sorted(keys) == sorted([f"{q}#t{t}" for q in (81, 111, 121) for t in (1, 2)])


@pytest.mark.slow
def test_smollm2_on_real_gsm8k_problems(shared_data, tmp_path):
    metrics = load_script("gsm8k").main(
        [
            "--model",
            "smollm2-135m-instruct",
            "--data",
            str(shared_data / "gsm8k" / "test.jsonl"),
            "--limit",
            "2",
            "--max_new_tokens",
            "16",
            "--output_dir",
            str(tmp_path),
        ]
    )
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert metrics["n"] == 2 and len(rows) == 2
    assert all(r["completion"].strip() for r in rows)  # a real model writes text, cut at stop strings
    assert all("### Instruction" not in r["completion"] for r in rows)
    assert metrics["settings"]["model"] == "smollm2-135m-instruct"
