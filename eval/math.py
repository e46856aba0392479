"""MATH accuracy (%) under the paper's protocol, a lenient reading and Math-Verify beside it (eval/README.md).

`score` = `accuracy`: MetaMath's eval_math.py (answer after "The answer is: ", Hendrycks' is_equiv);
`accuracy_lenient` adds a \\boxed{} fallback and extra equivalences (not the paper's protocol).

    python eval/math.py --model M [--adapter DIR] --data data/math/test.jsonl --output_dir out/math
    python eval/math.py --samples completions.jsonl --data data/math/math500_test.jsonl --output_dir D
"""

import logging
import os
import sys

# This file is named math.py: drop eval/ from sys.path before anything imports the standard `math`.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from balora.eval import math_grader  # noqa: E402
from balora.eval.runner import Benchmark, EvalArguments, int_task_id, run  # noqa: E402
from balora.repro.config import parse_args  # noqa: E402


def _summarize(rows: list[dict]) -> dict:
    # Math-Verify judges the lenient extraction: it disagrees with the lenient grader only on equivalence.
    return {
        "math_verify_score": round(100.0 * sum(bool(r.get("math_verify")) for r in rows) / len(rows), 4),
        "graders_disagree": sum(bool(r.get("math_verify")) != bool(r.get("correct_lenient")) for r in rows),
    }


def main(argv: list[str] | None = None) -> dict:
    """Evaluate and return metrics.json's content (score = Hendrycks-normalised accuracy in percent)."""
    (args,) = parse_args((EvalArguments,), argv)
    tasks, data_info = math_grader.load_tasks(args.data, args.limit)
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = main()
    print(
        f"math score={metrics['score']:.2f} (paper protocol) accuracy_lenient={metrics['accuracy_lenient']:.2f} "
        f"math_verify={metrics['math_verify_score']:.2f} n={metrics['n']}"
    )
