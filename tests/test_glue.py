"""GLUE task specs, TSV reading (bad input included) and metrics against hand-computed values."""

import math

import numpy as np
import pytest

from balora.repro.glue import (
    GLUE_TASKS,
    compute_metrics,
    get_task,
    load_glue_split,
    majority_class_score,
    read_glue_tsv,
    validate_metric,
)

# --- metrics: hand-computed --------------------------------------------------------------------
# preds [0,1,1,0] vs labels [0,1,0,0]: TP=1 TN=2 FP=1 FN=0.
PREDS = np.array([0, 1, 1, 0])
LABELS = np.array([0, 1, 0, 0])


def test_accuracy_and_f1_mrpc():
    m = compute_metrics("mrpc", PREDS, LABELS)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(2 / 3)  # P = 1/2, R = 1
    assert m["score"] == pytest.approx(75.0)  # the paper reports MRPC accuracy


def test_matthews_cola_from_logits():
    logits = np.array([[2.0, -1.0], [0.0, 3.0], [-1.0, 1.0], [5.0, 4.0]])  # argmax = PREDS
    m = compute_metrics("cola", logits, LABELS)
    expected = (1 * 2 - 1 * 0) / math.sqrt((1 + 1) * (1 + 0) * (2 + 1) * (2 + 0))
    assert m["matthews_correlation"] == pytest.approx(expected)
    assert m["score"] == pytest.approx(100 * expected)


def test_pearson_spearman_stsb():
    # Pearson of [1,2,3] vs [1,2,4] = 3 / sqrt(2 * 42/9); ranks agree -> Spearman 1.
    m = compute_metrics("stsb", np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 4.0]))
    assert m["pearson"] == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    assert m["spearmanr"] == pytest.approx(1.0)
    assert m["score"] == pytest.approx(100 * m["pearson"])


def test_mnli_three_classes_and_majority():
    labels = np.array([0, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 2]]
    assert compute_metrics("MNLI", logits, labels)["accuracy"] == pytest.approx(0.75)
    assert majority_class_score("mnli", labels) == pytest.approx(50.0)


def test_regression_task_rejects_classification_output_and_metric():
    with pytest.raises(ValueError, match="regression task"):
        compute_metrics("stsb", np.zeros((3, 2)), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="not reported for stsb"):
        validate_metric("stsb", "eval_accuracy")
    assert validate_metric("stsb", "eval_pearson") == "pearson"
    with pytest.raises(ValueError, match="non-integer"):
        compute_metrics("sst2", np.array([0.3, 0.9]), np.array([0, 1]))
    with pytest.raises(ValueError, match="3 columns"):
        compute_metrics("sst2", np.zeros((2, 3)), np.array([0, 1]))


def test_unknown_task():
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst3'"):
        get_task("sst3")
    assert get_task("SST-2").name == "sst2" and get_task("STS-B").is_regression
    assert all(spec.headline in spec.metrics for spec in GLUE_TASKS.values())


# --- TSV reading -------------------------------------------------------------------------------


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_pair_task_with_quotes_and_bom(tmp_path):
    path = _write(
        tmp_path / "MRPC" / "dev.tsv",
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t1\t2\tHe said " hi .\tShe said hi .\n0\t3\t4\tA\tB\n',
    )
    rows = read_glue_tsv(path, "mrpc")
    assert rows == [
        {"sentence1": 'He said " hi .', "sentence2": "She said hi .", "label": 1},
        {"sentence1": "A", "sentence2": "B", "label": 0},
    ]
    ds = load_glue_split("mrpc", "validation", glue_dir=tmp_path)
    assert ds.column_names == ["sentence1", "sentence2", "label"] and len(ds) == 2


def test_tsv_string_labels_map_to_hub_ids(tmp_path):
    path = _write(
        tmp_path / "rte.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tnot_entailment\n1\tc\td\tentailment\n",
    )
    assert [r["label"] for r in read_glue_tsv(path, "rte")] == [1, 0]


def test_tsv_malformed_row_reports_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.tsv", "sentence\tlabel\ngood one\t1\nbroken row without tab\n")
    with pytest.raises(
        ValueError, match=r"bad\.tsv:3: malformed row, expected 2 tab-separated fields, found 1"
    ):
        read_glue_tsv(path, "sst2")


def test_tsv_unknown_label_and_missing_column(tmp_path):
    path = _write(tmp_path / "lab.tsv", "sentence\tlabel\nok\t1\nok\t7\n")
    with pytest.raises(ValueError, match=r"lab\.tsv:3: unknown label '7'"):
        read_glue_tsv(path, "sst2")
    path = _write(tmp_path / "nolabel.tsv", "sentence\tpolarity\nok\t1\n")
    with pytest.raises(ValueError, match=r"\['label'\] missing from the header"):
        read_glue_tsv(path, "sst2")
    with pytest.raises(FileNotFoundError, match="GLUE file not found"):
        load_glue_split("rte", "train", glue_dir=tmp_path)


def test_offline_without_glue_dir_is_one_line_that_names_the_local_tsvs(tmp_path, monkeypatch, capsys):
    """The hub unreachable and no --glue_dir: one line and exit status 2 (it was a traceback), nothing
    written; when the data folder holds the task's TSVs, the line names the flag that uses them."""
    from balora.cli import finetune_glue

    monkeypatch.setenv("BALORA_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(OSError, match=r"nyu-mll/glue/rte from the hub .*Offline\? Pass --glue_dir with the"):
        load_glue_split("rte", "train")
    (tmp_path / "data" / "glue" / "RTE").mkdir(parents=True)
    argv = ["--task_name", "rte", "--method", "lora", "--output_dir", str(tmp_path / "out")]
    status = finetune_glue.cli(argv)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and "Traceback" not in "".join(errors)
    assert errors[0].endswith(
        f"The TSVs are in {tmp_path / 'data' / 'glue'}: pass --glue_dir {tmp_path / 'data' / 'glue'}"
    )
    assert not (tmp_path / "out").exists()


def test_real_glue_files_match_official_sizes(shared_data):
    glue = shared_data / "glue"
    expected = {
        ("CoLA", "dev"): (1043, {1: 721, 0: 322}),
        ("MRPC", "dev"): (408, {1: 279, 0: 129}),
        ("RTE", "dev"): (277, {0: 146, 1: 131}),
        ("SST-2", "dev"): (872, {1: 444, 0: 428}),
    }
    for (folder, split), (n, counts) in expected.items():
        if not (glue / folder).is_dir():
            continue
        rows = read_glue_tsv(glue / folder / f"{split}.tsv", get_task(folder))
        assert len(rows) == n
        assert {k: sum(r["label"] == k for r in rows) for k in counts} == counts
    if (glue / "STS-B").is_dir():
        rows = read_glue_tsv(glue / "STS-B" / "dev.tsv", "stsb")
        assert len(rows) == 1500 and all(0.0 <= r["label"] <= 5.0 for r in rows)


def test_committed_glue_configs_are_what_the_generator_writes(tmp_path):
    """configs/glue/*.yaml are generated files: an edit by hand (or a generator edit not rerun) is caught."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    script = repo / "scripts" / "generate_glue_configs.py"
    check = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True, cwd=repo)
    assert check.returncode == 0, check.stdout + check.stderr
    # A copy with one file edited and one removed: --check names both and changes nothing.
    copy = tmp_path / "glue"
    shutil.copytree(repo / "configs" / "glue", copy)
    edited = copy / "sst2_minilm_ba-lora.yaml"
    edited.write_text(edited.read_text().replace("learning_rate:", "learning_rate: 1.0 #", 1))
    (copy / "rte_minilm_lora.yaml").unlink()
    before = edited.read_text()
    stale = subprocess.run(
        [sys.executable, script, "--check", "--out_dir", copy], capture_output=True, text=True, cwd=repo
    )
    assert stale.returncode == 1
    assert "sst2_minilm_ba-lora.yaml" in stale.stdout and "rte_minilm_lora.yaml" in stale.stdout
    assert edited.read_text() == before and not (copy / "rte_minilm_lora.yaml").exists()
    # Writing restores both.
    subprocess.run([sys.executable, script, "--out_dir", copy], check=True, capture_output=True, cwd=repo)
    again = subprocess.run(
        [sys.executable, script, "--check", "--out_dir", copy], capture_output=True, text=True, cwd=repo
    )
    assert again.returncode == 0, again.stdout
