"""GSM8K extraction, numeric comparison, the samples-file contract and the CLI (score-only mode)."""

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from helpers import load_script  # noqa: E402

from balora.evaluation import gsm8k
from balora.evaluation.samples import SamplesError

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("completion, expected, method", [
    ("So 3 + 4 = 7.\nThe answer is: 7", "7", "marker"),
    ("The answer is: 1,234", "1,234", "marker"),
    ("The answer is: $18.00.", "$18.00", "marker"),
    ("the answer is 42 apples", "42", "marker"),
    ("The answer is: -5", "-5", "marker"),
    ("The answer is: 3/4", "3/4", "marker"),
    ("first The answer is: 1\nlater The answer is: 2", "2", "marker"),  # the LAST marker wins
    ("The answer is: unclear. 12 then 13", "12", "marker"),
    ("She has 5 left.\n#### 5", "5", "hash"),
    ("Thus \\boxed{64}.", "64", "boxed"),
    ("12 + 30 = 42 cookies", "42", "last_number"),
    ("It was 2.5 hours", "2.5", "last_number"),
    ("no digits here", None, None),
])
def test_extraction_formats(completion, expected, method):
    assert gsm8k.extract_answer(completion) == (expected, method)


@pytest.mark.parametrize("predicted, gold, correct", [
    ("18", "18", True), ("18.0", "18", True), ("18.", "18", True), ("$18", "18", True),
    ("1,000", "1000", True), ("50%", "50", True), ("0.75", "3/4", True), ("3/4", "0.75", True),
    ("-3", "-3", True), ("17.99", "18", False), ("180", "18", False), (None, "18", False),
    ("1/0", "0", False),
])
def test_numbers_compare_as_numbers(predicted, gold, correct):
    assert gsm8k.is_correct(predicted, gold) is correct


def test_parse_number_is_exact():
    assert gsm8k.parse_number("$1,234.50") == Fraction(246900, 200)
    assert gsm8k.parse_number("") is None


def test_gold_answer_requires_hash():
    assert gsm8k.gold_answer("work\n#### 1,200") == "1,200"
    with pytest.raises(ValueError, match="####"):
        gsm8k.gold_answer("no final answer")


def test_cli_scores_fixture_samples(tmp_path):
    metrics = load_script("gsm8k").main(["--samples", str(FIXTURES / "gsm8k_tiny_samples.jsonl"),
                                         "--data", str(FIXTURES / "gsm8k_tiny.jsonl"), "--output_dir", str(tmp_path)])
    assert metrics["score"] == pytest.approx(200 / 3, abs=1e-3)
    assert metrics["n"] == 3 and metrics["missing"] == 0
    assert metrics["protocol"] == "balora-gsm8k" and metrics["protocol_version"] == "1"
    assert metrics["provenance"]["git"]["commit"] is not None
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, True, False]
    assert rows[1]["extracted"] == "$600.00"
    assert set(rows[0]) >= {"task_id", "completion", "extracted", "correct"}
    assert json.loads((tmp_path / "metrics.json").read_text())["score"] == metrics["score"]


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("rows, message", [
    ([{"task_id": 0, "completion": "x"}, "{not json"], ":2: not valid JSON"),
    ([{"task_id": 7, "completion": "x"}], ":1: unknown task_id 7"),
    ([{"task_id": 0, "completion": "x"}, {"task_id": "0", "completion": "y"}], ":2: duplicate row"),
    ([{"task_id": 0}], ":1: each row needs"),
    ([{"task_id": 0, "completion": 5}], ":1: 'completion' must be a string"),
    ([{"task_id": "zero", "completion": "x"}], ":1: bad task_id"),
])
def test_bad_samples_files_name_the_line(tmp_path, rows, message):
    samples = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(SamplesError, match=message):
        load_script("gsm8k").main(["--samples", str(samples), "--data", str(FIXTURES / "gsm8k_tiny.jsonl"),
                                   "--output_dir", str(tmp_path / "out")])


def test_missing_tasks_count_as_failures(tmp_path):
    samples = _write(tmp_path / "partial.jsonl", [{"task_id": 0, "completion": "The answer is: 7"}])
    metrics = load_script("gsm8k").main(["--samples", str(samples), "--data", str(FIXTURES / "gsm8k_tiny.jsonl"),
                                         "--output_dir", str(tmp_path / "out")])
    assert metrics["missing"] == 2 and metrics["missing_task_ids"] == [1, 2]
    assert metrics["score"] == pytest.approx(100 / 3, abs=1e-3)
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[2]["missing"] is True and rows[2]["correct"] is False


def test_limit_applies_to_tasks_and_samples(tmp_path):
    metrics = load_script("gsm8k").main(["--samples", str(_write(tmp_path / "s.jsonl", [{"task_id": 0, "completion": "7"}])),
                                         "--data", str(FIXTURES / "gsm8k_tiny.jsonl"), "--limit", "1",
                                         "--output_dir", str(tmp_path / "out")])
    assert metrics["n"] == 1 and metrics["score"] == 100.0 and metrics["settings"]["limit"] == 1


def test_cli_exits_nonzero_on_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "eval" / "gsm8k.py"), "--samples", str(tmp_path / "nope.jsonl"),
                           "--data", str(FIXTURES / "gsm8k_tiny.jsonl"), "--output_dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr


def test_gold_answers_score_100_on_real_test_set(shared_data, tmp_path):
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 1319
    samples = _write(tmp_path / "gold.jsonl", [{"task_id": i, "completion": r["answer"].replace("####", "The answer is:")}
                                               for i, r in enumerate(rows)])
    metrics = load_script("gsm8k").main(["--samples", str(samples), "--data", str(shared_data / "gsm8k" / "test.jsonl"),
                                         "--output_dir", str(tmp_path / "out")])
    assert metrics["score"] == 100.0 and metrics["n"] == 1319
