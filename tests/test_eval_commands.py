"""The evaluator commands (balora/cli/eval_*.py): where their data comes from, and how they answer a user
error (one line on stderr, exit status 2, no traceback).

In-process calls of each command's `cli()`, the function its console entry point and its eval/ shim
run; tests/test_wheel.py runs them installed.
"""

import json
import re
import shutil
import sys

import pytest
from helpers import EVAL_FIXTURES

from balora.cli import (
    eval_gsm8k,
    eval_gsm8k_nll,
    eval_humaneval,
    eval_math,
    eval_mbpp,
    eval_mt_bench,
)
from balora.eval.data import benchmark_file

COMMANDS = {
    "gsm8k": eval_gsm8k,
    "gsm8k_nll": eval_gsm8k_nll,
    "math": eval_math,
    "humaneval": eval_humaneval,
    "mbpp": eval_mbpp,
    "mt_bench": eval_mt_bench,
}


@pytest.fixture
def data_folder(tmp_path, monkeypatch):
    """An empty data folder as $BALORA_DATA_DIR, offline, outside a rehearsal."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("BALORA_DATA_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("BALORA_REHEARSAL", raising=False)
    return folder


def _run_cli(command, argv, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [command.__name__, *argv])
    status = command.cli()
    return status, capsys.readouterr().err


def _one_error_line(stderr: str) -> str:
    """The single `error: ...` message of stderr; no traceback (a progress bar may precede it)."""
    assert "Traceback" not in stderr, stderr
    errors = re.findall(r"error: .*", stderr)
    assert len(errors) == 1, stderr
    return errors[0]


def test_benchmark_file_is_the_flag_then_the_data_folder_then_the_hub(data_folder, monkeypatch):
    assert benchmark_file("mine.jsonl", "gsm8k/test.jsonl") == "mine.jsonl"
    assert benchmark_file(None, "gsm8k/test.jsonl") is None  # not in the folder: the hub
    (data_folder / "gsm8k").mkdir()
    (data_folder / "gsm8k" / "test.jsonl").write_text("{}\n")
    assert benchmark_file(None, "gsm8k/test.jsonl") == str(data_folder / "gsm8k" / "test.jsonl")
    monkeypatch.setenv("BALORA_REHEARSAL", "1")  # a rehearsal reads the hub stand-ins on every machine
    assert benchmark_file(None, "gsm8k/test.jsonl") is None


@pytest.mark.parametrize(
    "bench, relative, fixture, samples, extra",
    [
        ("gsm8k", "gsm8k/test.jsonl", "gsm8k_tiny.jsonl", "gsm8k_tiny_samples.jsonl", []),
        ("math", "math/test.jsonl", "math_tiny.jsonl", "math_tiny_samples.jsonl", []),
        (
            "mt_bench",
            "mt_bench/question.jsonl",
            "mt_bench_questions.jsonl",
            "mt_bench_samples.jsonl",
            ["--judge_turns", "0"],
        ),
    ],
)
def test_without_data_the_data_folder_copy_is_read_offline(
    data_folder, tmp_path, bench, relative, fixture, samples, extra
):
    # The README's evaluation line without --data, on a machine without network but with the folder.
    target = data_folder / relative
    target.parent.mkdir(parents=True)
    shutil.copy(EVAL_FIXTURES / fixture, target)
    metrics = COMMANDS[bench].main(
        ["--samples", str(EVAL_FIXTURES / samples), "--output_dir", str(tmp_path / "out"), *extra]
    )
    assert metrics["settings"]["data"]["source"] == str(target)
    assert metrics["n"] == len(target.read_text().splitlines()) and metrics["missing"] == 0


def test_gsm8k_nll_reads_the_data_folder_copy(data_folder, tmp_path):
    target = data_folder / "gsm8k" / "test.jsonl"
    target.parent.mkdir()
    shutil.copy(EVAL_FIXTURES / "gsm8k_tiny.jsonl", target)
    metrics = eval_gsm8k_nll.main(
        ["--model", "tiny-llama", "--limit", "2", "--output_dir", str(tmp_path / "o")]
    )
    assert metrics["settings"]["data"]["source"] == str(target) and metrics["n"] == 2


@pytest.mark.parametrize(
    "bench, argv, missing",
    [
        ("gsm8k", ["--samples", "s.jsonl"], "gsm8k/test.jsonl"),
        ("gsm8k_nll", ["--model", "tiny-llama"], "gsm8k/test.jsonl"),
        ("math", ["--samples", "s.jsonl"], "math/test.jsonl"),
        ("mbpp", ["--samples", "s.jsonl"], "mbpp/mbpp.jsonl"),
        ("mbpp", ["--samples", "s.jsonl", "--mbpp_variant", "sanitized"], "mbpp/sanitized-mbpp.json"),
        ("mt_bench", ["--samples", "s.jsonl", "--judge_turns", "0"], "mt_bench/question.jsonl"),
    ],
)
def test_offline_without_any_copy_is_one_line_naming_the_fix(
    data_folder, tmp_path, monkeypatch, capsys, bench, argv, missing
):
    status, stderr = _run_cli(
        COMMANDS[bench], [*argv, "--output_dir", str(tmp_path / "out")], monkeypatch, capsys
    )
    assert status == 2
    line = _one_error_line(stderr)
    assert f"{data_folder / missing} not found" in line
    assert "--data FILE" in line and "scripts/fetch_data.py" in line
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("bench", sorted(COMMANDS))
def test_a_bad_value_is_one_line_and_status_2(bench, tmp_path, monkeypatch, capsys):
    argv = ["--model", "tiny-llama", "--limit", "0", "--output_dir", str(tmp_path)]
    status, stderr = _run_cli(COMMANDS[bench], argv, monkeypatch, capsys)
    assert status == 2
    assert _one_error_line(stderr) == "error: --limit must be >= 1, got 0"


@pytest.mark.parametrize("bench", ["gsm8k", "gsm8k_nll"])
def test_an_unconverted_pissa_adapter_is_one_line_and_status_2(bench, tmp_path, monkeypatch, capsys):
    # A PiSSA adapter as trained belongs to the residual base: on the original model it is refused.
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "init_lora_weights": "pissa"})
    )
    argv = [
        "--model",
        "tiny-llama",
        "--adapter",
        str(adapter),
        "--data",
        str(EVAL_FIXTURES / "gsm8k_tiny.jsonl"),
        "--limit",
        "1",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    if bench == "gsm8k":
        argv += ["--max_new_tokens", "2"]
    status, stderr = _run_cli(COMMANDS[bench], argv, monkeypatch, capsys)
    assert status == 2
    line = _one_error_line(stderr)
    assert "is an unconverted PiSSA adapter" in line and str(tmp_path / "run" / "adapter_lora") in line


def test_a_model_that_does_not_resolve_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    # transformers raises OSError (with a multi-line message) for a path or id it cannot load.
    argv = ["--model", str(tmp_path / "no_model"), "--data", str(EVAL_FIXTURES / "gsm8k_tiny.jsonl")]
    argv += ["--limit", "1", "--output_dir", str(tmp_path / "out")]
    status, stderr = _run_cli(eval_gsm8k, argv, monkeypatch, capsys)
    assert status == 2
    assert str(tmp_path / "no_model") in _one_error_line(stderr)
    # The decoding settings file used to be written before the model loaded: a folder was left behind.
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--top_p", "2", "error: top_p must be in (0, 1], got 2.0"),  # was accepted (ignored when greedy)
        ("--temperature", "-1", "error: temperature must be >= 0 (0 = greedy), got -1.0"),
        ("--batch_size", "0", "error: batch_size must be >= 1, got 0"),
    ],
)
def test_a_bad_decoding_setting_is_one_line_before_the_model_loads(
    flag, value, message, tmp_path, monkeypatch, capsys
):
    argv = ["--model", str(tmp_path / "no_model"), "--data", str(EVAL_FIXTURES / "gsm8k_tiny.jsonl")]
    argv += ["--limit", "1", "--output_dir", str(tmp_path / "out"), flag, value]
    status, stderr = _run_cli(eval_gsm8k, argv, monkeypatch, capsys)
    assert status == 2 and _one_error_line(stderr) == message and not (tmp_path / "out").exists()


def test_an_unknown_mbpp_variant_is_refused_before_any_file_is_read(tmp_path, monkeypatch, capsys):
    argv = ["--samples", "s.jsonl", "--mbpp_variant", "sanitised", "--output_dir", str(tmp_path)]
    status, stderr = _run_cli(eval_mbpp, argv, monkeypatch, capsys)
    assert status == 2
    assert _one_error_line(stderr) == "error: --mbpp_variant must be full or sanitized, got 'sanitised'"


@pytest.mark.parametrize(
    "extraction, stop_strings", [("paper", []), ("balora", ["### Instruction", "### Response"])]
)
def test_the_code_protocol_chooses_the_stop_strings_and_records_its_grading(
    data_folder, tmp_path, extraction, stop_strings
):
    # The paper's code pipeline generates without stop strings (code_process.py cuts afterwards); ours
    # stops at the training format's turn markers. A flag still overrides either.
    metrics = eval_humaneval.main(
        ["--model", "tiny-llama", "--limit", "1", "--max_new_tokens", "2", "--extraction", extraction]
        + ["--output_dir", str(tmp_path / "out")]
    )
    assert metrics["settings"]["decoding"]["stop_strings"] == stop_strings
    assert metrics["settings"]["extraction"] == extraction and "evalplus_version" in metrics["settings"]
    chosen = eval_humaneval.main(
        ["--model", "tiny-llama", "--limit", "1", "--max_new_tokens", "2", "--extraction", extraction]
        + ["--stop_strings", "STOP", "--output_dir", str(tmp_path / "chosen")]
    )
    assert chosen["settings"]["decoding"]["stop_strings"] == ["STOP"]
