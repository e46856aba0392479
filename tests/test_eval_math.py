"""MATH extraction and grading: Hendrycks normalisation (primary) and Math-Verify (second opinion)."""

import json
from pathlib import Path

import pytest
from helpers import load_script  # noqa: E402

from balora.evaluation import math_grader as mg

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("completion, expected, method", [
    ("So it is 5.\nThe answer is: 5", "5", "marker"),
    ("The answer is: $\\frac{1}{2}$.", "\\frac{1}{2}", "marker"),
    ("The answer is: \\boxed{x^2+1}", "x^2+1", "marker"),
    ("The answer is: 3\nand some trailing text", "3", "marker"),
    ("Hence $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}", "boxed"),
    ("first \\boxed{1} then \\boxed{\\{2, 3\\}}", "\\{2, 3\\}", "boxed"),
    ("\\fbox{7}", "7", "boxed"),
    ("cut off \\boxed{\\frac{1}{", None, None),
    ("no answer at all", None, None),
])
def test_extraction(completion, expected, method):
    assert mg.extract_answer(completion) == (expected, method)


@pytest.mark.parametrize("predicted, gold", [
    ("\\dfrac{3}{4}", "\\frac{3}{4}"), ("\\tfrac34", "\\frac{3}{4}"), ("0.5", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"), ("0.25", "\\frac14"), ("90^\\circ", "90"), ("90^{\\circ}", "90"),
    ("90 degrees", "90"), ("\\left(1, 2\\right)", "(1,2)"), ("x = 7", "7"), ("5 \\text{ cm}", "5"),
    ("10\\%", "10"), ("\\$5", "5"), (".5", "\\frac{1}{2}"), ("\\sqrt2", "\\sqrt{2}"),
    ("\\begin{bmatrix} 1 & 0 \\\\ 0 & 1 \\end{bmatrix}", "\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}"),
    ("1,000", "1000"), ("\\text{(B)}", "(B)"), ("-\\frac{1}{2}", "-0.5"), ("2.0", "2"),
])
def test_equivalent_formats(predicted, gold):
    assert mg.is_equiv(predicted, gold)


@pytest.mark.parametrize("predicted, gold", [
    ("3", "4"), ("\\frac{1}{3}", "0.33"), ("x+1", "x-1"), (None, "1"), ("(1,2)", "(2,1)"),
])
def test_different_answers(predicted, gold):
    assert not mg.is_equiv(predicted, gold)


def test_math_verify_is_a_second_opinion():
    # Math-Verify knows algebra the string grader does not: the two are reported separately.
    assert mg.math_verify_equiv("(x+1)^2", "x^2+2x+1")
    assert not mg.is_equiv("(x+1)^2", "x^2+2x+1")
    assert not mg.math_verify_equiv("3", "4")
    assert not mg.math_verify_equiv(None, "4")


def test_gold_from_answer_field_or_last_boxed():
    assert mg.gold_answer({"answer": "7", "solution": "\\boxed{8}"}) == "7"
    assert mg.gold_answer({"solution": "a \\boxed{1} b \\boxed{\\frac{2}{3}}"}) == "\\frac{2}{3}"
    with pytest.raises(ValueError, match="boxed"):
        mg.gold_answer({"solution": "none"})


def test_cli_scores_fixture_samples(tmp_path):
    metrics = load_script("math").main(["--samples", str(FIXTURES / "math_tiny_samples.jsonl"),
                                        "--data", str(FIXTURES / "math_tiny.jsonl"), "--output_dir", str(tmp_path)])
    assert metrics["score"] == pytest.approx(200 / 3, abs=1e-3)
    assert metrics["math_verify_score"] == pytest.approx(200 / 3, abs=1e-3)
    assert metrics["protocol"] == "balora-math"
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["extraction"] for r in rows] == ["marker", "marker", "marker"]  # "the answer is \\boxed{90}"
    assert [r["correct"] for r in rows] == [True, True, False]


def test_script_named_math_does_not_shadow_stdlib(tmp_path):
    # Running eval/math.py as a script puts eval/ first on sys.path; `import math` must stay the stdlib.
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "eval" / "math.py"), "--samples",
                           str(FIXTURES / "math_tiny_samples.jsonl"), "--data", str(FIXTURES / "math_tiny.jsonl"),
                           "--output_dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT / "eval")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "math score=66.67" in proc.stdout


def test_real_math500_gold_answers_grade_correct(shared_data, tmp_path):
    path = shared_data / "math" / "math500_test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()][:100]
    samples = tmp_path / "gold.jsonl"
    samples.write_text("".join(json.dumps({"task_id": i, "completion": f"The answer is: {r['answer']}"}) + "\n"
                               for i, r in enumerate(rows)))
    metrics = load_script("math").main(["--samples", str(samples), "--data", str(path), "--limit", "100",
                                        "--output_dir", str(tmp_path / "out")])
    assert metrics["score"] == 100.0
    assert metrics["math_verify_score"] >= 97.0


def test_full_test_file_gold_is_the_last_boxed(shared_data):
    tasks, info = mg.load_tasks(str(shared_data / "math" / "test.jsonl"))
    assert len(tasks) == 5000 and info["rows_in_file"] == 5000
    assert all(mg.is_equiv(t["gold"], t["gold"]) for t in tasks)
