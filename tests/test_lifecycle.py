"""The run lifecycle every training command shares (balora.cli.lifecycle): inputs checked before anything is
written, hyperparameters checked at parse time, a diverged run stopped without metrics.json, one-line
errors with their exit status."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import check_non_finite_shards
from test_glue_run import TINY as GLUE_TINY
from test_glue_run import _tiny_glue

from balora.cli import finetune_glue, lifecycle, train_nlg

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny" / "nlg.yaml")


def _nlg(out: Path, *flags: str) -> dict:
    return train_nlg.main(["--config", TINY, "--output_dir", str(out), "--max_steps", "1", *flags])


def _glue(tmp_path: Path, out: Path, *flags: str) -> dict:
    glue_dir = _tiny_glue(tmp_path / "glue")
    return finetune_glue.main(
        [
            "--task_name",
            "rte",
            "--glue_dir",
            str(glue_dir),
            "--model_name_or_path",
            "tiny-bert",
            "--method",
            "lora",
            "--output_dir",
            str(out),
            *GLUE_TINY,
            *flags,
        ]
    )


# --- hyperparameters at parse time --------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--learning_rate", "inf", "--learning_rate must be a finite number, got inf"),
        ("--learning_rate", "nan", "--learning_rate must be a finite number, got nan"),
        ("--lambda_svd", "inf", "--lambda_svd must be a finite number, got inf"),
        ("--lambda_consistency", "nan", "--lambda_consistency must be a finite number, got nan"),
        ("--learning_rate", "-0.001", "--learning_rate must be > 0, got -0.001"),
        ("--lora_dropout", "1.5", "--lora_dropout must be in [0, 1), got 1.5"),
        ("--lora_r", "0", "--lora_r must be >= 1, got 0"),
        ("--max_length", "0", "--max_length must be >= 1, got 0"),
        # These three used to fail after the model loaded: a ZeroDivisionError traceback, torch's words.
        ("--gradient_accumulation_steps", "0", "--gradient_accumulation_steps must be >= 1, got 0"),
        ("--per_device_train_batch_size", "0", "--per_device_train_batch_size must be >= 1, got 0"),
        ("--adam_beta1", "1.5", "--adam_beta1 must be in [0, 1), got 1.5"),
        ("--seed", "-5", "--seed must be in [0, 2**32), got -5"),  # numpy's words, without the flag
        ("--num_train_epochs", "-1", "--num_train_epochs must be > 0 (or 0 with --max_steps), got -1.0"),
        (
            "--model_dtype",
            "fp8",
            "--model_dtype must be auto or one of float32 | bfloat16 | float16, got 'fp8'",
        ),
    ],
)
def test_a_bad_hyperparameter_is_refused_before_anything_is_written(tmp_path, flag, value, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        _nlg(out, flag, value)
    assert not out.exists()


def test_a_glue_hyperparameter_is_checked_at_parse_time_too(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="^--lambda_diversity must be a finite number, got inf"):
        _glue(tmp_path, out, "--lambda_diversity", "inf")
    with pytest.raises(ValueError, match=r"^--label_noise must be in \[0, 1\), got 1.0"):
        _glue(tmp_path, out, "--label_noise", "1")
    assert not out.exists()


def test_a_lora_rank_above_a_target_modules_size_is_refused(tmp_path):
    # tiny-llama's k_proj is 32 x 64: a rank-48 update of it has rank 32 at most.
    with pytest.raises(ValueError, match="LoRA rank r = 48 exceeds the smaller side of .*k_proj"):
        _nlg(tmp_path / "out", "--method", "lora", "--regularizer_preset", "none", "--lora_r", "48")
    assert not (tmp_path / "out").exists()


# --- nothing written before every input is checked ------------------------------------------------------


def test_a_command_that_fails_on_its_data_or_model_leaves_no_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        _nlg(tmp_path / "nlg", "--data_path", str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="^--model_name_or_path tiny-nonexistent: cannot be loaded"):
        _nlg(tmp_path / "nlg", "--model_name_or_path", "tiny-nonexistent")
    assert not (tmp_path / "nlg").exists()
    with pytest.raises(ValueError, match="no_such_class"):
        _glue(tmp_path, tmp_path / "glue_run", "--minority_class", "no_such_class", "--imbalance_ratio", "4")
    with pytest.raises(ValueError, match="^--model_name_or_path no/such-model: cannot be loaded"):
        _glue(tmp_path, tmp_path / "glue_run", "--model_name_or_path", "no/such-model")
    assert not (tmp_path / "glue_run").exists()


# --- a diverged run -------------------------------------------------------------------------------------


def test_a_diverging_run_stops_with_one_line_and_no_metrics(tmp_path, capsys, caplog):
    """lr 1e39 is a finite float, so it passes the parse-time check; the first update sends the adapter to
    ±inf. The run stops there: exit status 1, one line, no metrics.json, no log claiming a finished run."""
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="train_nlg")
    argv = ["--config", TINY, "--output_dir", str(out), "--max_steps", "3", "--warmup_steps", "0"]
    status = train_nlg.cli([*argv, "--learning_rate", "1e39"])
    assert status == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "training diverged at step 1: parameter" in errors[0], errors
    assert not (out / "metrics.json").exists() and not (out / "log_history.json").exists()
    # --method ba-lora is logged as what the user asked for, not as the adapter it builds.
    assert "Method ba-lora:" in caplog.text and "Method pissa" not in caplog.text


def test_a_non_finite_shard_of_one_rank_stops_every_rank(tmp_path):
    """Under ZeRO-3 each rank checks its own shards: the rank with the NaN must not stop alone while the others
    wait for it in their next collective (two real processes, gloo)."""
    import torch.multiprocessing

    torch.multiprocessing.spawn(
        check_non_finite_shards, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2
    )
    outcomes = [(tmp_path / f"rank{rank}").read_text() for rank in (0, 1)]
    assert all(
        o.startswith("training diverged at step 3: parameter weight is NaN or infinite") for o in outcomes
    )


# --- the command line -----------------------------------------------------------------------------------


def test_an_input_error_is_one_line_and_exit_status_2(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "train_nlg.py",
            "--config",
            TINY,
            "--output_dir",
            str(tmp_path / "o"),
            "--lambda_svd",
            "inf",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --lambda_svd must be a finite number, got inf"]
    assert not (tmp_path / "o").exists()


def test_run_cli_answers_a_key_error_with_its_message_only(capsys):
    def main(argv):
        raise KeyError("task 'foo' is not a GLUE task")

    assert lifecycle.run_cli(main, []) == 2
    assert capsys.readouterr().err == "error: task 'foo' is not a GLUE task\n"


def test_a_launched_process_ends_with_its_status_and_its_output_flushed(monkeypatch, tmp_path):
    """Under a launcher (LOCAL_RANK set) exit_launched_process ends the process without the interpreter's
    teardown (where a gloo worker thread could abort the rank); buffered output still arrives. Run
    directly, it only returns the status."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    pid = os.fork()  # a real process that ends by exit_launched_process, without a new interpreter's imports
    if pid == 0:  # child
        try:
            with open(out, "w") as stdout, open(err, "w") as stderr:
                os.dup2(stdout.fileno(), 1)
                os.dup2(stderr.fileno(), 2)
            # A file, as a pipe is: block-buffered, so nothing reaches it unless flushed.
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
            os.environ["LOCAL_RANK"] = "0"
            print("written to a file, block-buffered")
            print("and to stderr", file=sys.stderr)
            lifecycle.exit_launched_process(3)
            print("not reached")
        finally:
            os._exit(99)  # only if exit_launched_process returned or raised
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert out.read_text() == "written to a file, block-buffered\n" and "and to stderr" in err.read_text()
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert lifecycle.exit_launched_process(5) == 5
