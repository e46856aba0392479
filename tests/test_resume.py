"""Output folders, finished runs, overwrites and resumes: nothing is lost or falsified.

One uninterrupted tiny run (2 steps, a checkpoint after each) is the reference; each test copies it and
plays an interruption, a resume or an overwrite on the copy.
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_glue_run import TINY as GLUE_TINY
from test_glue_run import _tiny_glue

from balora.cli import finetune_glue, lifecycle, train_nlg
from balora.repro import provenance

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny" / "nlg.yaml")
# Logging every 3 steps: only the checkpoints make the Trainer log the loss.
FLAGS = ["--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "3"]


def _train(out: Path, *flags: str) -> dict:
    return train_nlg.main(["--config", TINY, "--output_dir", str(out), *FLAGS, *flags])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    _train(out)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        name: (out / name).read_bytes()
        for name in ("metrics.json", "config.yaml", "log_history.json")
        if (out / name).exists()
    }


def test_resume_of_a_finished_run_is_refused_and_changes_nothing(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match="finished run .*nothing to resume"):
        _train(out, "--resume_from_checkpoint", "last")
    assert _snapshot(out) == before


def test_resume_skips_a_checkpoint_killed_while_saving_and_reports_the_whole_runs_train_loss(
    finished_run, tmp_path
):
    """A SIGKILL during the save of checkpoint-2 (empty optimizer.pt, no trainer_state.json): `last` is
    checkpoint-1, and the resumed run's train_loss is the mean over both steps, as uninterrupted."""
    out = _copy(finished_run, tmp_path)
    reference = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").unlink()
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(b"")
    (out / "checkpoint-2" / "trainer_state.json").unlink()
    assert provenance.last_complete_checkpoint(out) == out / "checkpoint-1"
    metrics = _train(out, "--resume_from_checkpoint", "last")
    assert metrics["resumed_from_checkpoint"] == str(out / "checkpoint-1")
    assert metrics["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
    assert json.loads((out / "metrics.json").read_text())["train_loss"] == metrics["train_loss"]
    losses = [e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert losses == pytest.approx(
        [e["loss"] for e in json.loads((finished_run / "log_history.json").read_text()) if "loss" in e],
        rel=1e-5,
    )


def test_a_run_killed_after_its_last_checkpoint_resumes_to_the_uninterrupted_result(tmp_path):
    """Killed after its final checkpoint, before metrics.json: the resume trains no step past max_steps (the
    Trainer trained one more: checkpoint-3 of a 2-step run, its loss as train_loss) and ends with the
    uninterrupted run's adapter, bit for bit, and train_loss. With save_total_limit the resumed checkpoint may
    be rotated away before the run ends, so its step is read when the run starts."""
    flags = (
        "--save_total_limit",
        "1",
        "--lr_scheduler_type",
        "constant",
    )  # constant: a step past the end moves
    reference = _train(tmp_path / "reference", *flags)
    out = tmp_path / "run"
    _train(out, *flags)
    (out / "metrics.json").unlink()
    metrics = _train(out, *flags, "--resume_from_checkpoint", "last")
    assert metrics["resumed_from_checkpoint"] == str(out / "checkpoint-2")
    assert [p.name for p in provenance.checkpoints(out)] == ["checkpoint-2"]
    assert metrics["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
    steps = [e["step"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert steps == [1, 2]
    adapter = "adapter/adapter_model.safetensors"
    assert (out / adapter).read_bytes() == (tmp_path / "reference" / adapter).read_bytes()


@pytest.mark.parametrize("damage", ["empty optimizer", "truncated trainer_state", "no trainer_state"])
def test_checkpoint_completeness_on_damaged_copies(finished_run, tmp_path, damage):
    checkpoint = tmp_path / "checkpoint-1"
    shutil.copytree(finished_run / "checkpoint-1", checkpoint)
    assert provenance.checkpoint_is_complete(checkpoint)
    state = checkpoint / "trainer_state.json"
    if damage == "empty optimizer":
        (checkpoint / "optimizer.pt").write_bytes(b"")
    elif damage == "truncated trainer_state":
        state.write_text(state.read_text()[: len(state.read_text()) // 2])
    else:
        state.unlink()
    assert not provenance.checkpoint_is_complete(checkpoint)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        lifecycle.resolve_resume(tmp_path, str(checkpoint), {})


def test_resume_with_a_changed_setting_is_refused(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    (out / "metrics.json").unlink()
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"learning_rate: 0\.001 -> 0\.01.*same settings"):
        _train(out, "--resume_from_checkpoint", "last", "--learning_rate", "0.01")
    assert _snapshot(out) == before
    # Where the run is written and how it reports may change.
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert lifecycle.resolve_resume(
        out, "last", {**config, "report_to": ["tensorboard"], "output_dir": "x"}
    ) == str(out / "checkpoint-2")


def test_a_failed_command_into_an_interrupted_runs_folder_leaves_its_resume_intact(finished_run, tmp_path):
    """A command with other settings into the folder of an interrupted run that fails on its data writes
    nothing there: the run's config.yaml stays, and the correct resume is still accepted."""
    out = _copy(finished_run, tmp_path)
    (out / "metrics.json").unlink()
    (out / "log_history.json").unlink()
    shutil.rmtree(out / "checkpoint-2")
    before = _snapshot(out)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _train(out, "--learning_rate", "0.01", "--data_path", str(tmp_path / "missing.jsonl"))
    assert _snapshot(out) == before
    metrics = _train(out, "--resume_from_checkpoint", "last")
    assert metrics["resumed_from_checkpoint"] == str(out / "checkpoint-1")


def test_overwrite_replaces_the_old_runs_checkpoints(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    with pytest.raises(ValueError, match="only one of them"):
        _train(out, "--overwrite_output_dir", "--resume_from_checkpoint", "last")
    # A bad input found before training starts leaves the finished run as it was.
    before = _snapshot(out)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _train(out, "--overwrite_output_dir", "--data_path", str(tmp_path / "missing.jsonl"))
    assert _snapshot(out) == before and len(provenance.checkpoints(out)) == 2
    # A new run (another method) over the finished one, saving no checkpoint, that dies before the end:
    # a later `--resume_from_checkpoint last` must not continue the old run's checkpoint-2.
    train_nlg.main(
        [
            "--config",
            TINY,
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
            "--method",
            "lora",
            "--regularizer_preset",
            "none",
            "--overwrite_output_dir",
        ]
    )
    assert provenance.checkpoints(out) == []
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "lora"
    (out / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        _train(out, "--resume_from_checkpoint", "last")


def test_an_output_dir_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=f"output directory {blocker / 'out'} cannot be written"):
        train_nlg.main(["--config", TINY, "--output_dir", str(blocker / "out"), "--max_steps", "1"])
    glue_dir = _tiny_glue(tmp_path / "glue")
    with pytest.raises(ValueError, match=f"output directory {blocker / 'out'} cannot be written"):
        finetune_glue.main(
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
                str(blocker / "out"),
                *GLUE_TINY,
            ]
        )
