"""GSM8K accuracy (%) of a model, or of completions produced elsewhere (protocol: eval/README.md).

`score` = `accuracy` is the paper's protocol (MetaMath's extraction after "The answer is: ");
`accuracy_lenient` beside it also accepts "####", \\boxed{} and the last number (not the paper's).

    python eval/gsm8k.py --model smollm2-135m-instruct --data data/gsm8k/test.jsonl \
        --limit 50 --max_new_tokens 256 --output_dir out/gsm8k
    python eval/gsm8k.py --samples completions.jsonl --data data/gsm8k/test.jsonl --output_dir out/g
"""

import logging
import os
import sys

# Run as a script from anywhere: the repository root holds the balora package, and eval/ itself
# must not shadow standard modules (eval/math.py would shadow `math`).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from balora.eval import gsm8k  # noqa: E402
from balora.eval.runner import Benchmark, EvalArguments, int_task_id, run  # noqa: E402
from balora.repro.config import parse_args  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Evaluate and return metrics.json's content (score = accuracy in percent)."""
    (args,) = parse_args((EvalArguments,), argv)
    tasks, data_info = gsm8k.load_tasks(args.data, args.limit)
    bench = Benchmark(
        name="gsm8k",
        protocol=gsm8k.PROTOCOL,
        protocol_version=gsm8k.PROTOCOL_VERSION,
        tasks=tasks,
        data_info=data_info,
        normalize_id=int_task_id,
        grade=lambda pairs: [gsm8k.score_sample(task, text) for task, text in pairs],
        grading=gsm8k.GRADING,
    )
    return run(bench, args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = main()
    print(
        f"gsm8k score={metrics['score']:.2f} (paper protocol) "
        f"accuracy_lenient={metrics['accuracy_lenient']:.2f} (lenient reading) n={metrics['n']}"
    )
