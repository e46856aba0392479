"""MATH accuracy (%) under the paper's protocol, a lenient reading and Math-Verify beside it (eval/README.md).

`score` = `accuracy`: MetaMath's eval_math.py (answer after "The answer is: ", Hendrycks' is_equiv);
`accuracy_lenient` adds a \\boxed{} fallback and extra equivalences (not the paper's protocol).
Without --data the 5,000 test problems are read from the data folder ($BALORA_DATA_DIR/math/test.jsonl,
default data/); the hub copy was taken down in 2025.

    balora-eval-math --model M [--adapter DIR] --output_dir out/math
    balora-eval-math --samples completions.jsonl --data data/math/math500_test.jsonl --output_dir D
    (from a checkout: python eval/math.py ..., the same command)
"""

from __future__ import annotations

import sys

from balora.cli.command import run_command
from balora.eval import math_grader
from balora.eval.data import benchmark_file
from balora.eval.runner import Benchmark, EvalArguments, int_task_id, run
from balora.repro.config import parse_args


def _summarize(rows: list[dict]) -> dict:
    # Math-Verify judges the lenient extraction: it disagrees with the lenient grader only on equivalence.
    return {
        "math_verify_score": round(100.0 * sum(bool(r.get("math_verify")) for r in rows) / len(rows), 4),
        "graders_disagree": sum(bool(r.get("math_verify")) != bool(r.get("correct_lenient")) for r in rows),
    }


def main(argv: list[str] | None = None) -> dict:
    """Evaluate and return metrics.json's content (score = Hendrycks-normalised accuracy in percent)."""
    (args,) = parse_args((EvalArguments,), argv, description=__doc__)
    tasks, data_info = math_grader.load_tasks(benchmark_file(args.data, math_grader.DATA_FILE), args.limit)
    bench = Benchmark(
        name="math",
        protocol=math_grader.PROTOCOL,
        protocol_version=math_grader.PROTOCOL_VERSION,
        tasks=tasks,
        data_info=data_info,
        normalize_id=int_task_id,
        grade=lambda pairs: [math_grader.score_sample(task, text) for task, text in pairs],
        summarize=_summarize,
        grading=math_grader.GRADING,
    )
    return run(bench, args)


def report(metrics: dict) -> str:
    return (
        f"math score={metrics['score']:.2f} (paper protocol) accuracy_lenient={metrics['accuracy_lenient']:.2f} "
        f"math_verify={metrics['math_verify_score']:.2f} n={metrics['n']}"
    )


def cli() -> int:
    """Console entry point `balora-eval-math` (and `python eval/math.py`): returns the exit status."""
    return run_command(main, report)


if __name__ == "__main__":
    sys.exit(cli())
