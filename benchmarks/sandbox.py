"""Sandbox throughput: canonical solutions through balora.eval.sandbox, graded as the evaluators grade them.

* HumanEval: the 164 canonical solutions (target <= 15 s on 2 cores), as continuations of the prompt
  (the default), as fenced full programs (prompt + solution inside a ```python block), or both.
* MBPP+: the canonical solutions of EvalPlus's MbppPlus.jsonl (399 tasks), each run twice as the
  evaluator runs it: against the base tests and against evalplus's base + plus inputs (target
  <= 120 s on 2 cores). Read from $BALORA_DATA_DIR/mbpp/MbppPlus.jsonl (scripts/fetch_data.py);
  skipped when the file is missing.

Each line gives the wall time, programs per second and the CPU time of the sandboxes' processes
(launcher, checker, worker; less sensitive to other load than the wall time).

    python benchmarks/sandbox.py [--workers 4] [--form continuation|program|both] [--mbpp_plus PATH] [--skip_mbpp_plus]
"""

import argparse
import json
import os
import resource
import time

from balora.eval import code
from balora.eval.sandbox import SandboxLimits, run_programs
from balora.repro.data import data_dir


def completions(task: dict, form: str) -> str:
    """The canonical solution as a model would write it: a continuation, or a fenced full program."""
    if form == "continuation":
        return task["canonical_solution"]
    return f"Here is the solution:\n```python\n{task['prompt_text']}{task['canonical_solution']}```\n"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def humaneval(form: str, workers: int | None) -> dict:
    """The 164 HumanEval canonical solutions in one form: {passed, total, seconds, cpu_s, ...}."""
    tasks, _ = code.load_humaneval()
    built = [
        code.humaneval_program(t, code.extract_code(completions(t, form), t["entry_point"])) for t in tasks
    ]
    start, cpu = time.perf_counter(), _children_cpu_s()
    results = run_programs(
        [p for p, _ in built],
        SandboxLimits(timeout_s=20, cpu_s=20),
        max_workers=workers,
        checks=[c for _, c in built],
    )
    seconds = time.perf_counter() - start
    return {
        "passed": sum(r.passed for r in results),
        "total": len(results),
        "seconds": round(seconds, 2),
        "cpu_s": round(_children_cpu_s() - cpu, 2),
        "programs_per_s": round(len(results) / seconds, 2),
        "failed": [t["task_id"] for t, r in zip(tasks, results, strict=True) if not r.passed],
        "isolation": results[0].isolation,
    }


def mbpp_plus(path: str, workers: int | None) -> dict:
    """The MBPP+ canonical solutions, base tests and plus tests, with the evaluator's default limits."""
    tasks, _ = code.load_mbpp(path)
    with open(path) as handle:
        canonical = {
            int(row["task_id"].split("/")[1]): row["canonical_solution"]
            for row in (json.loads(line) for line in handle if line.strip())
        }
    arguments = code.CodeArguments()
    start, cpu = time.perf_counter(), _children_cpu_s()
    rows = code.grade_programs(
        [(t, canonical[t["task_id"]]) for t in tasks],
        code.mbpp_program,
        arguments.limits(),
        workers=workers,
        plus_limits=arguments.plus_limits(),
    )
    seconds = time.perf_counter() - start
    return {
        "base_passed": sum(bool(r["correct"]) for r in rows),
        "plus_passed": sum(bool(r.get("correct_plus")) for r in rows),
        "total": len(rows),
        "programs": 2 * len(rows),
        "seconds": round(seconds, 2),
        "cpu_s": round(_children_cpu_s() - cpu, 2),
        "programs_per_s": round(2 * len(rows) / seconds, 2),
        "base_failed": [t["task_id"] for t, r in zip(tasks, rows, strict=True) if not r["correct"]],
        "plus_failed": [t["task_id"] for t, r in zip(tasks, rows, strict=True) if not r.get("correct_plus")],
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmarks; return {"cores", "humaneval_<form>": {...}, "mbpp_plus": {...}}."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=None, help="concurrent programs (default 2 x cores)")
    parser.add_argument("--form", choices=("continuation", "program", "both"), default="continuation")
    parser.add_argument("--mbpp_plus", default=None, help="MbppPlus.jsonl (default: $BALORA_DATA_DIR/mbpp/)")
    parser.add_argument("--skip_mbpp_plus", action="store_true", help="HumanEval only")
    args = parser.parse_args(argv)
    cores = os.cpu_count()
    result: dict = {"cores": cores}
    for form in ("continuation", "program") if args.form == "both" else (args.form,):
        he = result[f"humaneval_{form}"] = humaneval(form, args.workers)
        print(
            f"HumanEval canonical ({form}): {he['passed']}/{he['total']} passed in {he['seconds']:.1f} s "
            f"({he['programs_per_s']:.1f} programs/s, {he['cpu_s']:.1f} CPU s, {cores} cores; target <= 15 s "
            f"on 2 cores), isolation {he['isolation']}"
        )
    path = args.mbpp_plus or str(data_dir() / "mbpp" / "MbppPlus.jsonl")
    if args.skip_mbpp_plus:
        return result
    if not os.path.exists(path):
        print(f"MBPP+ skipped: {path} not found (scripts/fetch_data.py fetches it, or pass --mbpp_plus)")
        return result
    mp = result["mbpp_plus"] = mbpp_plus(path, args.workers)
    print(
        f"MBPP+ canonical, base + plus: {mp['base_passed']}/{mp['total']} base, {mp['plus_passed']}/{mp['total']} "
        f"plus passed in {mp['seconds']:.1f} s ({mp['programs_per_s']:.1f} programs/s, {mp['cpu_s']:.1f} CPU s, "
        f"{cores} cores; target <= 120 s on 2 cores); failed base {mp['base_failed']}, plus {mp['plus_failed']}"
    )
    return result


if __name__ == "__main__":
    main()
