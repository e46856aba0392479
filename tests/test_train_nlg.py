"""train_nlg.py end to end on the tiny config, its bad-input errors, every config parsing, DeepSpeed."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import launch_distributed

from balora.cli import train_nlg
from balora.repro.config import parse_args

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny" / "nlg.yaml")


def _run(tmp_path, *flags):
    return train_nlg.main(["--config", TINY, "--output_dir", str(tmp_path / "out"), *flags])


def test_tiny_run_writes_all_artifacts(tmp_path):
    metrics = _run(tmp_path, "--max_steps", "4", "--logging_steps", "2")
    out = tmp_path / "out"
    for name in ("config.yaml", "run.json", "metrics.json", "log_history.json", "adapter", "adapter_lora"):
        assert (out / name).exists(), name
    assert metrics["trainable_params"] == 8192 and metrics["method"] == "ba-lora"
    assert metrics["adapter_method"] == "pissa" and metrics["trained"] == "ba-lora"
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 42 and run["packages"]["torch"] and run["wall_time_s"] > 0
    assert run["peak_memory"]["host_rss_peak"] > 0 and "commit" in run["git"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["regularizer_preset"] == "iclr2026" and config["lambda_consistency"] == 0.025
    history = json.loads((out / "log_history.json").read_text())
    steps = [e for e in history if "task_loss" in e]
    assert len(steps) == 2 and steps[0]["consistency_loss"] == 0.0  # KL = 0 at step 0
    assert all(k in steps[0] for k in ("diversity_loss", "svd_loss", "lambda_svd"))


def test_flags_override_config_and_lora_method(tmp_path):
    metrics = _run(
        tmp_path,
        "--max_steps",
        "1",
        "--method",
        "lora",
        "--lora_r",
        "2",
        "--lora_alpha",
        "2",
        "--regularizer_preset",
        "none",
    )
    assert metrics["method"] == "lora" and metrics["trainable_params"] == 4096
    assert metrics["lambdas"] == {"consistency": 0.0, "diversity": 0.0, "svd": 0.0}


def test_finished_output_dir_is_refused_unless_overwrite(tmp_path):
    _run(tmp_path, "--max_steps", "1")
    with pytest.raises(FileExistsError, match="finished run"):
        _run(tmp_path, "--max_steps", "1")
    _run(tmp_path, "--max_steps", "1", "--overwrite_output_dir")


def test_resume_from_last_checkpoint(tmp_path):
    _run(tmp_path, "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "1")
    # As if the run had died after its second checkpoint.
    (tmp_path / "out" / "metrics.json").unlink()
    shutil.rmtree(tmp_path / "out" / "checkpoint-3")
    metrics = _run(
        tmp_path,
        "--max_steps",
        "3",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--resume_from_checkpoint",
        "last",
    )
    assert metrics["epoch"] > 0 and metrics["resumed_from_checkpoint"].endswith("checkpoint-2")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train_nlg.main(
            ["--config", TINY, "--output_dir", str(tmp_path / "empty"), "--resume_from_checkpoint", "last"]
        )


def test_pissa_init_dir_is_written_once_and_reused(tmp_path):
    init_dir = tmp_path / "init"
    _run(tmp_path, "--max_steps", "1", "--init_dir", str(init_dir))
    stamp = (init_dir / "COMPLETE").stat().st_mtime_ns
    train_nlg.main(
        [
            "--config",
            TINY,
            "--output_dir",
            str(tmp_path / "second"),
            "--max_steps",
            "1",
            "--init_dir",
            str(init_dir),
            "--seed",
            "7",
        ]
    )
    assert (init_dir / "COMPLETE").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "flags, error, match",
    [
        (["--method", "qlora"], ValueError, "--method must be one of full | lora | pissa | ba-lora"),
        (
            ["--method", "ba-lora", "--regularizer_preset", "none"],
            ValueError,
            "PiSSA init \\+ the regularizer_preset",
        ),
        (["--data_split", "train[5:5]"], ValueError, "No rows left"),
        (["--query_field", "question"], ValueError, "has no query_field 'question'"),
        (["--data_path", "/nonexistent/data.jsonl"], FileNotFoundError, "does not exist"),
        (
            ["--data_path", "some-org/not-a-dataset"],  # the hub is offline here: an OSError, exit status 2
            OSError,
            "Could not load dataset 'some-org/not-a-dataset' .*Offline\\? Pass a local .json/.jsonl file",
        ),
        (
            ["--model_name_or_path", "smollm2-135m-instruct", "--attn_implementation", "flash_attention_2"],
            ValueError,
            "flash-attn is not installed",
        ),
    ],
)
def test_bad_input_raises_clear_errors(tmp_path, flags, error, match):
    if "flash_attention_2" in flags and __import__("importlib").util.find_spec("flash_attn"):
        pytest.skip("flash-attn is installed here")
    with pytest.raises(error, match=match):
        _run(tmp_path, "--max_steps", "1", *flags)


def test_a_pissa_decomposition_under_zero3_is_refused_with_one_line(tmp_path, capsys):
    """PiSSA cannot decompose ZeRO-3-partitioned weights: one line and exit status 2 (it was a traceback),
    before any model loads or any folder is made."""
    import gc

    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    zero3 = str(REPO / "configs" / "deepspeed" / "zero3.json")
    argv = ["--config", TINY, "--output_dir", str(tmp_path / "out"), "--deepspeed", zero3]
    status = train_nlg.cli([*argv, "--method", "pissa", "--init_dir", str(tmp_path / "init")])
    gc.collect()  # the arguments' DeepSpeed config is global while they live: none is left for later tests
    assert not is_deepspeed_zero3_enabled()
    assert status == 2 and capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: PiSSA cannot decompose ZeRO-3-partitioned weights: run this command once with --init_only "
        "and without --deepspeed first"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "init").exists()


def test_unknown_config_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(Path(TINY).read_text()), "lamda_svd": 0.1}))
    with pytest.raises(ValueError, match="unknown config keys \\['lamda_svd'\\]"):
        train_nlg.main(["--config", str(bad), "--output_dir", str(tmp_path / "o")])


def test_cli_error_exits_non_zero_with_a_message(tmp_path, capsys):
    # The command's own entry point; `python train_nlg.py` answering a bad flag with exit status 2 and one
    # line in a real process: test_lifecycle.py::test_an_input_error_is_one_line_and_exit_status_2.
    status = train_nlg.cli(["--config", TINY, "--output_dir", str(tmp_path / "o"), "--method", "qlora"])
    assert status == 2 and "--method must be one of" in capsys.readouterr().err


def _entry_point_for(config: dict) -> tuple[tuple, list[str]]:
    """The dataclasses of the script a config is for, and the flags that script adds itself."""
    if "task_name" in config:
        from balora.cli import finetune_glue

        return finetune_glue.ARGUMENT_CLASSES, ["--regularizer_task", "nlu"]
    return train_nlg.ARGUMENT_CLASSES, []


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")))
def test_every_config_parses(path, tmp_path):
    config = yaml.safe_load((REPO / path).read_text())
    classes, script_flags = _entry_point_for(config)
    # parsing validates names, types and the regulariser presets; deepspeed/bf16 need a GPU to validate
    parsed = parse_args(
        classes,
        [
            *script_flags,
            "--config",
            str(REPO / path),
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "true",
            "--bf16",
            "false",
            "--deepspeed",
            "",
        ],
    )
    assert len(parsed) == len(classes)


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json"])
def test_deepspeed_configs_are_consistent_with_training_arguments(name, tmp_path):
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from balora.trainer import BALoRATrainingArguments

    args = BALoRATrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    ds = HfTrainerDeepSpeedConfig(str(REPO / "configs" / "deepspeed" / name))
    ds.trainer_config_process(args)
    assert not ds.mismatches


@pytest.mark.slow
def test_deepspeed_zero2_two_cpu_processes_with_either_head_gives_the_same_losses(tmp_path):
    """Real ZeRO-2 runs with 2 processes on CPU (gloo; the first run compiles DeepSpeed's CPU ops), one with
    the full LM head and one with the rows-only head (the default). The rows-only head narrows the head's
    input by a hook, so the DeepSpeed engine's forward and its gradient reduction across the 2 processes run
    as usual: every logged loss and term matches."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    histories = {}
    for flag, port in (("false", "29517"), ("true", "29520")):  # ports no other test uses
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
        cmd += ["train_nlg.py", "--config", TINY, "--output_dir", str(tmp_path / flag), "--max_steps", "3"]
        cmd += [
            "--logging_steps",
            "1",
            "--deepspeed",
            "configs/deepspeed/zero2.json",
            "--rows_only_lm_head",
            flag,
        ]
        proc = launch_distributed(cmd, env, REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = tmp_path / flag
        assert json.loads((out / "run.json").read_text())["world_size"] == 2
        assert (out / "adapter_lora" / "adapter_model.safetensors").exists()
        history = json.loads((out / "log_history.json").read_text())
        assert any("consistency_loss" in e for e in history)
        histories[flag] = [e for e in history if "loss" in e]
        assert torch.isfinite(torch.tensor([e["loss"] for e in histories[flag]])).all()
    assert "student LM head applied to supervised rows" in proc.stderr
    # DeepSpeed's shared-memory kernel (inference only) is neither built nor loaded on CPU: ~30 s per environment
    assert "deepspeed_shm_comm" not in proc.stdout + proc.stderr
    assert len(histories["true"]) == len(histories["false"]) == 3
    for got, expected in zip(histories["true"], histories["false"], strict=True):
        for key in ("loss", "task_loss", "consistency_loss", "diversity_loss", "svd_loss"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_deepspeed_zero3_with_saved_pissa_decomposition(tmp_path):
    """ZeRO-3 partitions the weights: decompose first (--init_only), then train; the saved adapters
    are gathered from the partitions and converted from files."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    init = ["--init_dir", str(tmp_path / "init")]
    train_nlg.main(["--config", TINY, "--output_dir", str(tmp_path / "i"), "--init_only", *init])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29518",
        "train_nlg.py",
        "--config",
        TINY,
        "--output_dir",
        str(tmp_path / "z3"),
        "--max_steps",
        "2",
        "--deepspeed",
        "configs/deepspeed/zero3.json",
        *init,
    ]
    proc = launch_distributed(cmd, env, REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    converted = load_file(tmp_path / "z3" / "adapter_lora" / "adapter_model.safetensors")
    assert converted and all(v.numel() > 0 and v.abs().sum() > 0 for v in converted.values())


@pytest.mark.slow
def test_full_fine_tuning_under_zero3_saves_the_gathered_model(tmp_path):
    """Full FT under ZeRO-3: every rank takes part in gathering the partitioned weights for merged/ (rank 0 alone
    waited for the others forever), and the swapped-in reference is left out (it cannot be swapped into
    partitioned weights: balora.adapters.reference_is_partitioned)."""
    from helpers import _run_in_own_group

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29516"]
    cmd += ["train_nlg.py", "--config", TINY, "--output_dir", str(tmp_path / "full"), "--method", "full"]
    cmd += ["--regularizer_preset", "none", "--max_steps", "1", "--deepspeed", "configs/deepspeed/zero3.json"]
    proc = _run_in_own_group(cmd, env, REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "full" / "merged" / "model.safetensors")
    assert weights and all(v.numel() > 0 for v in weights.values())  # whole tensors, not empty partitions
    assert json.loads((tmp_path / "full" / "run.json").read_text())["world_size"] == 2
