"""Sandbox throughput: the 164 HumanEval canonical solutions through balora.sandbox (target <= 30 s on 2 cores).

    python benchmarks/sandbox.py [--workers 4]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from balora.evaluation.code import extract_code, humaneval_program, load_humaneval  # noqa: E402
from balora.sandbox import SandboxLimits, run_programs  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Run the canonical solutions and return {passed, total, seconds, programs_per_s, isolation}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=None, help="concurrent programs (default 2 x cores)")
    args = parser.parse_args(argv)
    tasks, _ = load_humaneval()
    programs = [humaneval_program(t, extract_code(t["canonical_solution"], t["entry_point"])) for t in tasks]
    start = time.perf_counter()
    results = run_programs(programs, SandboxLimits(timeout_s=20, cpu_s=20), max_workers=args.workers)
    seconds = time.perf_counter() - start
    result = {"passed": sum(r.passed for r in results), "total": len(results), "seconds": round(seconds, 2),
              "programs_per_s": round(len(results) / seconds, 2), "cores": os.cpu_count(),
              "isolation": results[0].isolation}
    print(f"{result['passed']}/{result['total']} canonical solutions passed in {seconds:.1f} s "
          f"({result['programs_per_s']:.1f} programs/s, {os.cpu_count()} cores), isolation {result['isolation']}")
    return result


if __name__ == "__main__":
    main()
