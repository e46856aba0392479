"""The README's usage examples run as written (with a tiny model standing in for the hub model)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

import train_nlg
from balora.repro import data, models

REPO = Path(__file__).resolve().parent.parent


def test_your_data_your_model_command_and_adapter_evaluation(tmp_path):
    rows = [
        {"question": f"What is {a} + {a}?", "answer": f"{a} + {a} = {2 * a}. The answer is: {2 * a}"}
        for a in range(1, 17)
    ]
    (tmp_path / "my_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The README command, with tiny-llama for the hub model, CPU flags, and one step.
    metrics = train_nlg.main(
        [
            "--model_name_or_path",
            "tiny-llama",
            "--data_path",
            str(tmp_path / "my_data.jsonl"),
            "--query_field",
            "question",
            "--response_field",
            "answer",
            "--method",
            "ba-lora",
            "--regularizer_preset",
            "iclr2026",
            "--lora_r",
            "16",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "2e-5",
            "--bf16",
            "false",
            "--use_cpu",
            "true",
            "--max_steps",
            "1",
            "--report_to",
            "none",
            "--output_dir",
            str(tmp_path / "my_run"),
        ]
    )
    assert metrics["trained"] == "ba-lora" and (tmp_path / "my_run" / "adapter_lora").is_dir()
    gsm8k_rows = REPO / "balora" / "repro" / "hub_fixtures" / "openai__gsm8k" / "main" / "test.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "eval/gsm8k.py",
            "--model",
            "tiny-llama",
            "--adapter",
            str(tmp_path / "my_run" / "adapter_lora"),
            "--data",
            str(gsm8k_rows),
            "--limit",
            "2",
            "--max_new_tokens",
            "4",
            "--output_dir",
            str(tmp_path / "my_run" / "gsm8k"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "my_run" / "gsm8k" / "metrics.json").read_text())["n"] == 2


def test_trainer_snippet(tmp_path):
    from balora.adapters import AdapterConfig, prepare_model
    from balora.trainer import BALoRATrainer, BALoRATrainingArguments

    model, tokenizer = models.tiny_causal_lm("tiny-llama")
    train_dataset = data.build_dataset(data.arithmetic_word_problems(16), tokenizer, "query", "response", 128)
    collator = data.CausalLMCollator(tokenizer.pad_token_id)
    # As in the README, plus CPU and length flags.
    model = prepare_model(model, AdapterConfig(method="pissa", r=16, alpha=16))
    args = BALoRATrainingArguments(
        output_dir=str(tmp_path / "out"),
        regularizer_preset="iclr2026",
        learning_rate=2e-5,
        use_cpu=True,
        max_steps=2,
        logging_steps=1,
        report_to="none",
        per_device_train_batch_size=4,
    )
    trainer = BALoRATrainer(model=model, args=args, train_dataset=train_dataset, data_collator=collator)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "svd_loss" in e]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(e["task_loss"])) for e in logged)


def test_custom_loop_example():
    spec = importlib.util.spec_from_file_location("custom_loop", REPO / "examples" / "custom_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    history = module.main(["--steps", "2", "--device", "cpu"])
    assert len(history) == 2
    # The reference is the model before training: no divergence at the first step, some after it.
    assert history[0]["consistency_loss"] == 0.0 and history[1]["consistency_loss"] > 0
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)


def test_a_plain_peft_model_is_refused_with_a_clear_error(tmp_path):
    import pytest
    from peft import LoraConfig, get_peft_model

    from balora.trainer import BALoRATrainer, BALoRATrainingArguments

    model, _ = models.tiny_causal_lm("tiny-llama")
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights="pissa"))
    args = BALoRATrainingArguments(
        output_dir=str(tmp_path), regularizer_preset="iclr2026", use_cpu=True, report_to="none"
    )
    with pytest.raises(ValueError, match="needs a model returned by balora.adapters.prepare_model"):
        BALoRATrainer(model=model, args=args)


def test_quickstart_on_the_tiny_model(tmp_path, capsys):
    # The README's one-minute line (`python quickstart.py --model tiny-llama ...`), shortened: every
    # method trains and is scored, and the table is printed with one row per method.
    from balora.cli import quickstart

    rows = quickstart.main(
        ["--model", "tiny-llama", "--max_steps", "1", "--eval_limit", "2", "--output_dir", str(tmp_path)]
    )
    assert [row["method"] for row in rows] == ["base model", "LoRA", "PiSSA", "BA-LoRA"]
    assert all(row["trainable"] > 0 and row["train_loss"] is not None for row in rows[1:])
    assert all(0.0 <= row["accuracy"] <= 100.0 for row in rows)
    table = capsys.readouterr().out
    assert "tiny-llama, 1 steps, held-out arithmetic problems (n=2):" in table and "| BA-LoRA" in table
