"""GSM8K extraction, numeric comparison, the samples-file contract and the CLI (score-only mode)."""

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from balora.cli import eval_gsm8k
from balora.eval import gsm8k
from balora.eval.runner import int_task_id
from balora.eval.samples import SamplesError, read_samples

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
ROOT = Path(__file__).resolve().parent.parent


# The paper's reading (MetaMath eval_gsm8k.py): text after the last "The answer is: ", the first
# match of [\-+]?\d*[\.,/]?\d+, commas removed, rounded to an integer.
@pytest.mark.parametrize(
    "completion, extracted, value",
    [
        ("So 3 + 4 = 7.\nThe answer is: 7", "7", 7),
        ("The answer is: 1,234", "1,234", 1234),
        ("The answer is: $18.00.", "18.00", 18),
        ("The answer is: -5", "-5", -5),
        ("first The answer is: 1\nlater The answer is: 2", "2", 2),  # the LAST marker wins
        ("The answer is: unclear. 12 then 13", "12", 12),
        ("The answer is: 3/4", "3/4", 1),  # round(0.75)
        ("The answer is: 5/0", "5/0", 5),  # MetaMath: a zero denominator gives the numerator
        ("The answer is: 17.6", "17.6", 18),
        ("The answer is: 2.5", "2.5", 2),  # Python's round: half to even
        ("The answer is: 1,234,567", "1,234", 1234),  # one separator in the regex
        ("the answer is: 42", None, None),  # case matters
        ("The answer is 42", None, None),  # so do the colon and the space
        ("She has 5 left.\n#### 5", None, None),
        ("Thus \\boxed{64}.", None, None),
        ("12 + 30 = 42 cookies", None, None),
        ("The answer is: none", None, None),
    ],
)
def test_paper_extraction(completion, extracted, value):
    assert gsm8k.extract_answer(completion) == extracted
    assert gsm8k.answer_value(extracted) == value


@pytest.mark.parametrize(
    "completion, expected, method",
    [
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
    ],
)
def test_lenient_extraction_formats(completion, expected, method):
    assert gsm8k.extract_answer_lenient(completion) == (expected, method)


@pytest.mark.parametrize(
    "predicted, gold, correct",
    [
        ("18", "18", True),
        ("18.0", "18", True),
        ("18.", "18", True),
        ("$18", "18", True),
        ("1,000", "1000", True),
        ("50%", "50", True),
        ("0.75", "3/4", True),
        ("3/4", "0.75", True),
        ("-3", "-3", True),
        ("17.99", "18", False),
        ("180", "18", False),
        (None, "18", False),
        ("1/0", "0", False),
    ],
)
def test_lenient_numbers_compare_as_exact_numbers(predicted, gold, correct):
    assert gsm8k.is_correct_lenient(predicted, gold) is correct


# Where the two readings part: the lenient one accepts other answer formats (the fallbacks that
# supplied many of the answers of small models), the paper's rounds to an integer.
@pytest.mark.parametrize(
    "completion, gold, paper, lenient",
    [
        ("The answer is: 7", "7", True, True),
        ("The answer is: 1,200", "1,200", True, True),
        ("the answer is 7", "7", False, True),  # marker in another case, no colon
        ("The answer is 7", "7", False, True),  # no colon
        ("So she has 7.\n#### 7", "7", False, True),  # GSM8K's own format
        ("Thus \\boxed{7}.", "7", False, True),  # boxed
        ("3 + 4 = 7 apples", "7", False, True),  # last number
        ("The answer is: 17.6", "18", True, False),  # MetaMath rounds; exact comparison does not
        ("The answer is: 3/4", "1", True, False),
        ("The answer is: 1,234,567", "1234567", False, True),
        ("The answer is: 8", "7", False, False),
    ],
)
def test_paper_and_lenient_readings_differ_exactly_there(completion, gold, paper, lenient):
    fields = gsm8k.score_sample({"gold": gold}, completion)
    assert fields["correct"] is paper
    assert fields["correct_lenient"] is lenient


def test_parse_number_is_exact():
    assert gsm8k.parse_number("$1,234.50") == Fraction(246900, 200)
    assert gsm8k.parse_number("") is None


def test_gold_answer_requires_hash():
    assert gsm8k.gold_answer("work\n#### 1,200") == "1,200"
    with pytest.raises(ValueError, match="####"):
        gsm8k.gold_answer("no final answer")


def test_cli_scores_fixture_samples(tmp_path):
    metrics = eval_gsm8k.main(
        [
            "--samples",
            str(FIXTURES / "gsm8k_tiny_samples.jsonl"),
            "--data",
            str(FIXTURES / "gsm8k_tiny.jsonl"),
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert metrics["score"] == metrics["accuracy"] == pytest.approx(200 / 3, abs=1e-3)
    assert metrics["accuracy_lenient"] == pytest.approx(200 / 3, abs=1e-3)
    assert metrics["n"] == 3 and metrics["missing"] == 0
    assert metrics["protocol"] == "balora-gsm8k" and metrics["protocol_version"] == "2"
    assert "paper protocol" in metrics["grading"]["score"]
    assert "NOT the paper's protocol" in metrics["grading"]["accuracy_lenient"]
    assert metrics["provenance"]["git"]["commit"] is not None
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, True, False]
    assert rows[1]["extracted"] == "600.00" and rows[1]["value"] == 600
    assert rows[1]["extracted_lenient"] == "$600.00"
    assert set(rows[0]) >= {"task_id", "completion", "extracted", "correct"}
    assert json.loads((tmp_path / "metrics.json").read_text())["score"] == metrics["score"]


def _write(path, rows):
    def encode(row):
        if isinstance(row, bytes):
            return row
        return (row if isinstance(row, str) else json.dumps(row)).encode()

    path.write_bytes(b"".join(encode(r) + b"\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"task_id": 0, "completion": "x"}, "{not json"], ":2: not valid JSON"),
        ([{"task_id": 7, "completion": "x"}], ":1: unknown task_id 7"),
        ([{"task_id": 0, "completion": "x"}, {"task_id": "0", "completion": "y"}], ":2: duplicate row"),
        ([{"task_id": 0}], ":1: each row needs"),
        ([{"task_id": 0, "completion": 5}], ":1: 'completion' must be a string"),
        ([{"task_id": "zero", "completion": "x"}], ":1: bad task_id"),
        # Latin-1 bytes on line 2 (a file saved in the wrong encoding): named, no UnicodeDecodeError.
        (
            [{"task_id": 0, "completion": "x"}, b'{"task_id": 1, "completion": "caf\xe9"}'],
            ":2: not UTF-8 text",
        ),
    ],
)
def test_bad_samples_rows_are_named_failed_and_the_run_finishes(tmp_path, rows, message, caplog):
    samples = _write(tmp_path / "bad.jsonl", rows)
    metrics = eval_gsm8k.main(
        ["--samples", str(samples), "--data", str(FIXTURES / "gsm8k_tiny.jsonl")]
        + ["--output_dir", str(tmp_path / "out")]
    )
    # The bad row is named (file:line and why), in the log and in metrics.json; nothing else is lost:
    # every task is in samples.jsonl, and the rejected one counts as a failure.
    assert metrics["rejected_samples_count"] == 1 and message in metrics["rejected_samples"][0]
    assert [m for m in caplog.messages if "sample rejected" in m and message in m]
    graded = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(graded) == metrics["n"] and metrics["missing"] == metrics["n"] - len(
        {row["task_id"] for row in graded if row.get("completion") is not None}
    )
    # Strict reading (the library call without `rejected`) still raises with the same message.
    with pytest.raises(SamplesError, match=message):
        read_samples(samples, range(metrics["n"]), int_task_id)


def test_cli_reports_both_readings_and_keeps_every_completion(tmp_path):
    completions = ["3 + 4 = 7 apples.", "The answer is: 600", "So 120.\n#### 120"]
    samples = _write(
        tmp_path / "s.jsonl", [{"task_id": i, "completion": c} for i, c in enumerate(completions)]
    )
    metrics = eval_gsm8k.main(
        [
            "--samples",
            str(samples),
            "--data",
            str(FIXTURES / "gsm8k_tiny.jsonl"),
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert metrics["score"] == metrics["accuracy"] == pytest.approx(100 / 3, abs=1e-3)
    assert metrics["accuracy_lenient"] == 100.0 and metrics["lenient_only"] == 2
    assert metrics["extraction_methods"] == {"None": 2, "marker": 1}
    assert metrics["extraction_methods_lenient"] == {"last_number": 1, "marker": 1, "hash": 1}
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in rows] == completions  # every generation kept, so it can be re-graded


def test_missing_tasks_count_as_failures(tmp_path):
    samples = _write(tmp_path / "partial.jsonl", [{"task_id": 0, "completion": "The answer is: 7"}])
    metrics = eval_gsm8k.main(
        [
            "--samples",
            str(samples),
            "--data",
            str(FIXTURES / "gsm8k_tiny.jsonl"),
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert metrics["missing"] == 2 and metrics["missing_task_ids"] == [1, 2]
    assert metrics["score"] == pytest.approx(100 / 3, abs=1e-3)
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[2]["missing"] is True and rows[2]["correct"] is False


def test_limit_applies_to_tasks_and_samples(tmp_path):
    metrics = eval_gsm8k.main(
        [
            "--samples",
            str(_write(tmp_path / "s.jsonl", [{"task_id": 0, "completion": "The answer is: 7"}])),
            "--data",
            str(FIXTURES / "gsm8k_tiny.jsonl"),
            "--limit",
            "1",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert metrics["n"] == 1 and metrics["score"] == 100.0 and metrics["settings"]["limit"] == 1


def test_cli_answers_a_missing_file_with_one_line_and_status_2(tmp_path):
    # The script in eval/, run from another folder: the command of the package, without a traceback.
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "eval" / "gsm8k.py"),
            "--samples",
            str(tmp_path / "nope.jsonl"),
            "--data",
            str(FIXTURES / "gsm8k_tiny.jsonl"),
            "--output_dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1] == f"error: --samples {tmp_path / 'nope.jsonl'} does not exist"
    )


def test_gold_answers_score_100_on_real_test_set(shared_data, tmp_path):  # under both readings
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 1319
    samples = _write(
        tmp_path / "gold.jsonl",
        [
            {"task_id": i, "completion": r["answer"].replace("####", "The answer is:")}
            for i, r in enumerate(rows)
        ],
    )
    metrics = eval_gsm8k.main(
        [
            "--samples",
            str(samples),
            "--data",
            str(shared_data / "gsm8k" / "test.jsonl"),
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert metrics["accuracy_lenient"] == 100.0 and metrics["n"] == 1319
    # The paper's regex reads one thousands separator: problem 611's "1,450,000" reads as 1450.
    assert metrics["correct"] == 1318 and metrics["lenient_only"] == 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows if not r["correct"]] == [611] and rows[611]["value"] == 1450


def test_backend_vllm_where_it_cannot_run_is_a_user_error_before_any_work(tmp_path, capsys):
    # The machine of the suite has no vllm (and no GPU): asking for it is answered before the model loads.
    from balora.cli import eval_gsm8k
    from balora.cli.command import run_command

    out = tmp_path / "out"
    argv = ["--model", "smollm2-135m-instruct", "--backend", "vllm", "--limit", "2"]
    argv += ["--data", str(FIXTURES / "gsm8k_tiny.jsonl"), "--output_dir", str(out)]
    assert run_command(eval_gsm8k.main, argv=argv, basic_logging=False) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --backend vllm needs the vllm package and a CUDA GPU; use --backend hf"
    assert not (out / "completions.jsonl").exists()
