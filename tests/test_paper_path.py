"""The paper path: configs that load their data, PiSSA init folders that know what they hold, one rule
for method vs regularisers, and a trimmed rehearsal of the paper scripts (scripts/*.sh --rehearse)."""

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from balora.cli import train_nlg
from balora.cli.lifecycle import resolve_method
from balora.repro import glue, rehearsal
from balora.trainer import BALoRATrainingArguments

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny" / "nlg.yaml")
NLG_CONFIGS = sorted((REPO / "configs" / "nlg").glob("*.yaml"))


@pytest.fixture
def rehearsing(monkeypatch):
    monkeypatch.setenv(rehearsal.REHEARSAL_ENV, "1")


# --- every paper config loads its data set (defect: query/response on the pissa-dataset subsets) ------


def _configs_by_dataset() -> dict[tuple, list[Path]]:
    groups = defaultdict(list)
    for path in NLG_CONFIGS:
        config = yaml.safe_load(path.read_text())
        groups[(config["data_path"], config.get("data_subset"), config.get("data_split", "train"))].append(
            path
        )
    return groups


@pytest.mark.parametrize("key", sorted(_configs_by_dataset(), key=str), ids=str)
def test_every_nlg_config_reads_fields_its_dataset_has(key, rehearsing):
    data_path, subset, split = key
    from balora.repro import data

    rows = data.load_rows(data_path, split, subset)
    for path in _configs_by_dataset()[key]:
        (model_args, data_args, *_rest) = train_nlg.parse_args(
            train_nlg.ARGUMENT_CLASSES,
            [
                "--config",
                str(path),
                "--output_dir",
                "/tmp/unused",
                "--use_cpu",
                "true",
                "--bf16",
                "false",
                "--deepspeed",
                "",
            ],
        )
        train_nlg._check_data_fields(rows, data_args)  # raises naming the missing field


def test_wrong_field_fails_before_any_model_is_loaded(tmp_path, rehearsing):
    # The model id has no stand-in, so reaching the model load would raise another error.
    with pytest.raises(ValueError, match="has no query_field 'query'.*instruction / output"):
        train_nlg.main(
            [
                "--config",
                str(NLG_CONFIGS[0]),
                "--output_dir",
                str(tmp_path / "o"),
                "--model_name_or_path",
                "nobody/not-a-model",
                "--query_field",
                "query",
                "--use_cpu",
                "true",
                "--bf16",
                "false",
                "--deepspeed",
                "",
            ]
        )
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.parametrize("task", sorted(glue.GLUE_TASKS))
def test_glue_tasks_load_from_the_hub_layout(task, rehearsing):
    for split in ("train", "validation"):
        ds = glue.load_glue_split(task, split)
        assert "sentence1" in ds.column_names and "label" in ds.column_names and len(ds) > 0


# --- a PiSSA init folder records what it was made from ------------------------------------------------


def _init_only(tmp_path, init_dir, *flags):
    return train_nlg.main(
        [
            "--config",
            TINY,
            "--output_dir",
            str(tmp_path / "i"),
            "--init_only",
            "--init_dir",
            str(init_dir),
            *flags,
        ]
    )


def test_pissa_init_dir_refuses_other_rank_model_or_alpha(tmp_path):
    init_dir = tmp_path / "pissa_init"
    _init_only(tmp_path, init_dir, "--lora_r", "4", "--lora_alpha", "4")
    record = json.loads((init_dir / "decomposition.json").read_text())
    assert record["r"] == 4 and record["model"] == "tiny-llama" and record["weights"].startswith("tiny:")
    _init_only(tmp_path, init_dir, "--lora_r", "4", "--lora_alpha", "4")  # same settings: reused
    with pytest.raises(ValueError, match="r: saved 4, this run 2"):
        _init_only(tmp_path, init_dir, "--lora_r", "2", "--lora_alpha", "2")
    with pytest.raises(ValueError, match="model: saved 'tiny-llama', this run 'tiny-mistral'.*weights"):
        _init_only(
            tmp_path, init_dir, "--lora_r", "4", "--lora_alpha", "4", "--model_name_or_path", "tiny-mistral"
        )
    # and a training run that would reuse it at another rank fails the same way, before training
    with pytest.raises(ValueError, match="r: saved 4, this run 8"):
        train_nlg.main(
            [
                "--config",
                TINY,
                "--output_dir",
                str(tmp_path / "t"),
                "--init_dir",
                str(init_dir),
                "--lora_r",
                "8",
                "--lora_alpha",
                "8",
                "--max_steps",
                "1",
            ]
        )


def test_pissa_init_dir_without_record_is_refused(tmp_path):
    init_dir = tmp_path / "pissa_init"
    _init_only(tmp_path, init_dir)
    (init_dir / "decomposition.json").unlink()  # as written by an earlier version
    with pytest.raises(ValueError, match="without decomposition.json"):
        _init_only(tmp_path, init_dir)


def test_pissa_rank_above_module_size_is_a_clear_error(tmp_path):
    # tiny-llama's k_proj is 32 x 64: r = 48 cannot be initialised by PiSSA
    with pytest.raises(ValueError, match="r = 48 exceeds the smaller side of .*k_proj"):
        _init_only(tmp_path, tmp_path / "init", "--lora_r", "48", "--lora_alpha", "48")


# --- one rule for method and regularisers ---------------------------------------------------------------


def _args(tmp_path, **kwargs):
    return BALoRATrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)


@pytest.mark.parametrize(
    "method, kwargs, trained",
    [
        ("ba-lora", {"regularizer_preset": "iclr2026"}, "ba-lora"),
        # the paper's "w/o reg" ablation: the BA-LoRA config with every λ switched off
        (
            "ba-lora",
            {
                "regularizer_preset": "iclr2026",
                "lambda_consistency": 0,
                "lambda_diversity": 0,
                "lambda_svd": 0,
            },
            "pissa",
        ),
        ("pissa", {"regularizer_preset": "iclr2026"}, "ba-lora"),  # PiSSA + regularisers is BA-LoRA
        ("pissa", {}, "pissa"),
        ("lora", {"regularizer_preset": "iclr2026"}, "lora+reg"),  # "LoRA + Reg"
        ("lora", {"lambda_svd": 0.1}, "lora+reg"),
        ("lora", {}, "lora"),
    ],
)
def test_method_rule(tmp_path, method, kwargs, trained):
    what = resolve_method(method, _args(tmp_path, **kwargs))
    assert what["trained"] == trained and what["method"] == method
    assert what["adapter_method"] == ("pissa" if method == "ba-lora" else method)


def test_ba_lora_without_any_regulariser_setting_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="set regularizer_preset"):
        resolve_method("ba-lora", _args(tmp_path))


def test_ablation_without_regularisers_runs_and_records_what_ran(tmp_path):
    metrics = train_nlg.main(
        [
            "--config",
            TINY,
            "--output_dir",
            str(tmp_path / "o"),
            "--max_steps",
            "1",
            "--lambda_consistency",
            "0",
            "--lambda_diversity",
            "0",
            "--lambda_svd",
            "0",
        ]
    )
    assert metrics["method"] == "ba-lora" and metrics["trained"] == "pissa" and not metrics["regularized"]
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["trained"] == "pissa" and saved["lambdas"] == {
        "consistency": 0.0,
        "diversity": 0.0,
        "svd": 0.0,
    }


def test_pissa_with_a_preset_is_recorded_as_ba_lora(tmp_path):
    metrics = train_nlg.main(
        ["--config", TINY, "--output_dir", str(tmp_path / "o"), "--max_steps", "1", "--method", "pissa"]
    )
    assert metrics["method"] == "pissa" and metrics["trained"] == "ba-lora" and metrics["regularized"]


# --- the rehearsal, trimmed: one NLG table row, one NLU row, the rank sweep at two ranks ----------------


def _rehearse(script: str, tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "PY": sys.executable, "MASTER_PORT": "29631"}
    cmd = [
        "bash",
        f"scripts/{script}.sh",
        "--rehearse",
        "--results_dir",
        str(tmp_path / "results"),
        "--outputs_dir",
        str(tmp_path / "outputs"),
        *args,
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, start_new_session=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_rehearsal_nlg_row(tmp_path):
    """A BA-LoRA row of the NLG table (LLaMA-2 stand-in, ZeRO-2 on two CPU processes, PiSSA init stage,
    GSM8K and MATH generation + grading, the paper-layout table). A rehearsed row of the NLU table: the
    killed-runner test of tests/test_runner.py."""
    out = _rehearse("nlg_table", tmp_path, "--only", "llama2-7b_ba-lora_metamath")
    run = tmp_path / "results" / "nlg" / "llama2-7b_ba-lora_metamath" / "seed42"
    assert (run / "DONE").exists() and "[ok  ] nlg/llama2-7b_ba-lora_metamath/seed42" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trained"] == "ba-lora" and json.loads((run / "run.json").read_text())["world_size"] == 2
    for bench in ("gsm8k", "math"):
        assert json.loads((run / "eval" / f"{bench}.json").read_text())["n"] == 2
    table = json.loads((tmp_path / "results" / "tables" / "nlg.json").read_text())
    assert "LLaMA-2-7B" in json.dumps(table)
    init = tmp_path / "outputs" / "pissa_init" / "llama2-7b_r128" / "decomposition.json"
    assert json.loads(init.read_text())["r"] == 128


@pytest.mark.slow
def test_rehearsal_rank_sweep_decomposes_once_per_rank(tmp_path, monkeypatch):
    """The sweep's --lora_r override gets its own PiSSA decomposition per rank (it used to reuse _r128):
    every stage of a rank's run carries that rank and its own init folder, and the init stage, run for
    real on the rehearsal stand-in, records it. (Training, evaluation and the table of a rehearsed NLG
    row: test_rehearsal_nlg_row.)"""
    from balora.cli import train_nlg
    from balora.repro import run as R

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("BALORA_REHEARSAL", "1")
    opts = R.Options(
        study="rank_sweep",
        rehearse=True,
        grid={
            "models": ("mistral-7b",),
            "methods": ("ba-lora",),
            "ranks": ("1", "128"),
            "with_full_ft": ("0",),
        },
        results_dir=str(tmp_path / "results"),
        outputs_dir=str(tmp_path / "outputs"),
    )
    planned = R.make_plan(opts)
    assert [run.run_id for run in planned] == [f"rank_sweep/mistral-7b_ba-lora_r{r}/seed42" for r in (1, 128)]
    for run, r in zip(planned, (1, 128), strict=True):
        init_dir = str(tmp_path / "outputs" / "pissa_init" / f"mistral-7b_r{r}")
        for stage in run.stages:
            if stage.name in ("pissa_init", "train"):
                argv = stage.argv
                assert (
                    argv[argv.index("--lora_r") + 1] == str(r)
                    and argv[argv.index("--init_dir") + 1] == init_dir
                )
        init = next(stage for stage in run.stages if stage.name == "pissa_init")
        assert (
            init.argv[1] == "train_nlg.py"
        )  # run here, as the rehearsal runs it (forked, the modules loaded)
        train_nlg.main(init.argv[2:])
        record = json.loads((Path(init_dir) / "decomposition.json").read_text())
        assert record["r"] == r and record["model"] == "mistralai/Mistral-7B-v0.1"


def test_adalora_schedule_fractions_follow_the_run_length(tmp_path):
    """The AdaLoRA configs give tinit/tfinal as fractions of the run's optimizer steps: a 2-step run (the
    rehearsal, or --max_train_samples) has a budgeting phase too (absolute steps made peft refuse it)."""
    from balora.cli import finetune_glue

    assert (
        finetune_glue._schedule_steps(0.1, 7800, "t") == 780
        and finetune_glue._schedule_steps(0.2, 7800, "t") == 1560
    )
    assert finetune_glue._schedule_steps(0.1, 2, "t") == 0 and finetune_glue._schedule_steps(25, 2, "t") == 25
    with pytest.raises(ValueError, match="adalora_tinit must be"):
        finetune_glue._schedule_steps(2.5, 10, "adalora_tinit")
    config = yaml.safe_load((REPO / "configs" / "glue" / "rte_deberta-v3-base_adalora.yaml").read_text())
    assert (config["adalora_tinit"], config["adalora_tfinal"]) == (0.1, 0.2)
