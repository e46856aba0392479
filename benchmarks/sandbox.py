"""Sandbox throughput: the 164 HumanEval canonical solutions through balora.eval.sandbox (target <= 30 s on 2 cores).

Each solution is graded twice, as the evaluator grades completions: as a continuation of the prompt
and as a fenced full program (prompt + solution inside a ```python block).

    python benchmarks/sandbox.py [--workers 4] [--form both|continuation|program]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from balora.eval.code import extract_code, humaneval_program, load_humaneval  # noqa: E402
from balora.eval.sandbox import SandboxLimits, run_programs  # noqa: E402


def completions(task: dict, form: str) -> str:
    """The canonical solution as a model would write it: a continuation, or a fenced full program."""
    if form == "continuation":
        return task["canonical_solution"]
    return f"Here is the solution:\n```python\n{task['prompt_text']}{task['canonical_solution']}```\n"


def main(argv: list[str] | None = None) -> dict:
    """Run the canonical solutions; return {form: {passed, total, seconds, programs_per_s}, isolation}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=None, help="concurrent programs (default 2 x cores)")
    parser.add_argument("--form", choices=("continuation", "program", "both"), default="both")
    args = parser.parse_args(argv)
    tasks, _ = load_humaneval()
    result = {"cores": os.cpu_count()}
    for form in ("continuation", "program") if args.form == "both" else (args.form,):
        built = [humaneval_program(t, extract_code(completions(t, form), t["entry_point"])) for t in tasks]
        start = time.perf_counter()
        results = run_programs(
            [p for p, _ in built],
            SandboxLimits(timeout_s=20, cpu_s=20),
            max_workers=args.workers,
            checks=[c for _, c in built],
        )
        seconds = time.perf_counter() - start
        result[form] = {
            "passed": sum(r.passed for r in results),
            "total": len(results),
            "seconds": round(seconds, 2),
            "programs_per_s": round(len(results) / seconds, 2),
            "failed": [t["task_id"] for t, r in zip(tasks, results, strict=True) if not r.passed],
        }
        result["isolation"] = results[0].isolation
        print(
            f"{form}: {result[form]['passed']}/{result[form]['total']} canonical solutions passed in "
            f"{seconds:.1f} s ({result[form]['programs_per_s']:.1f} programs/s, {os.cpu_count()} cores), "
            f"isolation {result['isolation']}"
        )
    return result


if __name__ == "__main__":
    main()
