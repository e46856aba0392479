"""Bad input ends in one line naming the file and the key or line, and leaves what was written intact."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_glue_run import TINY as GLUE_TINY
from test_glue_run import _tiny_glue

from balora.cli import train_nlg
from balora.repro.config import parse_args

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny" / "nlg.yaml")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The `error: ...` line of a failed command; no traceback."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _tiny_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(Path(TINY).read_text() + text)
    return path


# --- configs ------------------------------------------------------------------------------------------


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: lora\nlora_r: [4, 8\nmax_steps: 2\n")
    with pytest.raises(ValueError, match=f"^{bad}:3: malformed YAML") as error:
        train_nlg.main(["--config", str(bad), "--output_dir", str(tmp_path / "o")])
    assert "<unicode string>" not in str(error.value) and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "text, match",
    [
        ("max_steps: 6.5\n", "max_steps must be an integer, got 6.5"),
        ("lora_r: [4, 8]\n", "lora_r must be a single value, got [4, 8]"),
        ("learning_rate: [0.1]\n", "learning_rate must be a single value"),
        ("learning_rate: true\n", "learning_rate must be a number, got True"),
        ("max_steps: six\n", "max_steps: 'six' is not valid"),
        ("target_modules: [q_proj, [v_proj]]\n", "target_modules must be a list of single values"),
    ],
)
def test_a_yaml_value_of_the_wrong_type_names_the_file_and_key(tmp_path, text, match):
    bad = _tiny_config(tmp_path, text)
    with pytest.raises(ValueError, match=f"{bad}: " + match.replace("[", r"\[").replace("]", r"\]")):
        parse_args(train_nlg.ARGUMENT_CLASSES, ["--config", str(bad), "--output_dir", str(tmp_path / "o")])


def test_yaml_values_are_converted_like_flags(tmp_path):
    good = _tiny_config(tmp_path, "learning_rate: 1\ntarget_modules: q_proj\nlora_alpha: 8\n")
    _, _, adapter_args, args = parse_args(
        train_nlg.ARGUMENT_CLASSES, ["--config", str(good), "--output_dir", "o"]
    )
    assert args.learning_rate == 1.0 and isinstance(args.learning_rate, float)
    assert adapter_args.target_modules == ["q_proj"] and adapter_args.lora_alpha == 8.0


# --- NLG data -----------------------------------------------------------------------------------------


def _train_on(tmp_path: Path, name: str, content: bytes | str, *flags: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    train_nlg.main(
        [
            "--config",
            TINY,
            "--output_dir",
            str(tmp_path / "out"),
            "--max_steps",
            "1",
            "--method",
            "lora",
            "--regularizer_preset",
            "none",
            "--data_path",
            str(path),
            *flags,
        ]
    )


GOOD_ROW = json.dumps({"query": "What is 1 + 1?", "response": "The answer is: 2"})


@pytest.mark.parametrize(
    "row, match",
    [
        ('["What is 1 + 1?", "2"]', r"rows\.jsonl:2: a data row must be a JSON object, got list"),
        ('{"query": "q", "response": null}', r"rows\.jsonl:2: field 'response' is None, not a string"),
        ('{"query": "q", "response": 2}', r"rows\.jsonl:2: field 'response' is 2, not a string"),
    ],
)
def test_a_bad_data_row_names_the_file_and_line(tmp_path, row, match):
    with pytest.raises(ValueError, match=match):
        _train_on(tmp_path, "rows.jsonl", f"{GOOD_ROW}\n{row}\n")


def test_a_json_array_row_that_is_not_an_object_names_its_index(tmp_path):
    with pytest.raises(ValueError, match=r"rows\.json row 1: a data row must be a JSON object, got int"):
        _train_on(tmp_path, "rows.json", f"[{GOOD_ROW}, 7]")


def test_non_utf8_data_names_the_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: not UTF-8 text"):
        _train_on(tmp_path, "rows.jsonl", GOOD_ROW.encode() + b'\n{"query": "caf\xe9", "response": "x"}\n')


def test_all_empty_responses_are_an_error(tmp_path):
    rows = "".join(json.dumps({"query": f"q{i}", "response": " " if i % 2 else ""}) + "\n" for i in range(4))
    with pytest.raises(ValueError, match=r"rows\.jsonl: all 4 responses .* are empty"):
        _train_on(tmp_path, "rows.jsonl", rows)


# --- GLUE TSVs ----------------------------------------------------------------------------------------


def test_non_utf8_tsv_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    """The command's cli() in-process (finetune_glue's exit status 2 from a real process: the forked-stage
    test of tests/test_runner.py)."""
    from balora.cli import finetune_glue

    glue_dir = _tiny_glue(tmp_path / "glue")
    train = glue_dir / "RTE" / "train.tsv"
    lines = train.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"dog", b"d\xf6g")
    train.write_bytes(b"\n".join(lines))
    argv = ["--task_name", "rte", "--glue_dir", str(glue_dir), "--model_name_or_path", "tiny-bert",
            "--method", "lora", "--output_dir", str(tmp_path / "o"), *GLUE_TINY]  # fmt: skip
    status = finetune_glue.cli(argv)
    proc = subprocess.CompletedProcess(argv, status, "", capsys.readouterr().err)
    _one_line_error(proc, f"{train}:4: not UTF-8 text")


# --- tables and figures -------------------------------------------------------------------------------


@pytest.fixture
def results_copy(tmp_path) -> Path:
    """A copy of the committed mini NLU / NLG results (small files only)."""
    root = tmp_path / "results"
    for study in ("nlu", "nlg", "ablation"):
        shutil.copytree(REPO / "results" / "mini" / study, root / "mini" / study)
    return root


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=ENV, timeout=300
    )


def _aggregate_here(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """`python aggregate_results.py <args>` through its entry point (balora.cli.aggregate.cli) in this
    process; the real process runs in test_aggregate_with_a_nan_score_names_the_file."""
    from balora.cli import aggregate

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["aggregate_results.py", *args])
    status = aggregate.cli()
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(sys.argv, status, captured.out, captured.err)


def test_aggregate_with_a_missing_results_dir_keeps_the_tables(results_copy, tmp_path, monkeypatch, capsys):
    tables = tmp_path / "tables"
    assert (
        _aggregate_here(
            monkeypatch, capsys, "mini_nlu", "--results_dir", str(results_copy), "--out_dir", str(tables)
        ).returncode
        == 0
    )
    before = {p.name: p.read_bytes() for p in tables.iterdir()}
    proc = _aggregate_here(
        monkeypatch, capsys, "mini_nlu", "--results_dir", str(tmp_path / "typo"), "--out_dir", str(tables)
    )
    _one_line_error(proc, f"--results_dir {tmp_path / 'typo'} does not exist")
    assert {p.name: p.read_bytes() for p in tables.iterdir()} == before


def test_aggregate_with_a_nan_score_names_the_file(results_copy, tmp_path):
    metrics = results_copy / "mini" / "nlu" / "cola_lora" / "seed42" / "metrics.json"
    payload = json.loads(metrics.read_text())
    payload["score"] = math.nan
    metrics.write_text(json.dumps(payload))
    proc = _script("aggregate_results.py", "mini_nlu", "--results_dir", str(results_copy))
    _one_line_error(proc, f"{metrics}: metric 'score' is nan")


def test_plot_with_a_corrupt_log_history_names_it_and_keeps_the_figures(results_copy, tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "mini_ablation.png").write_bytes(b"the figure of an earlier call")
    history = sorted((results_copy / "mini" / "nlg").glob("*/seed42/log_history.json"))[0]
    history.write_text('[{"loss": 1.0, "step": 1}, {"lo')
    proc = _script(
        "plot_results.py",
        "mini_loss_curves",
        "--results_dir",
        str(results_copy),
        "--out_dir",
        str(figures),
    )
    _one_line_error(proc, f"{history} is not valid JSON")
    assert sorted(p.name for p in figures.iterdir()) == ["mini_ablation.png"]
    assert (figures / "mini_ablation.png").read_bytes() == b"the figure of an earlier call"
