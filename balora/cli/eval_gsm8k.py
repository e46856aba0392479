"""GSM8K accuracy (%) of a model, or of completions produced elsewhere (protocol: eval/README.md).

`score` = `accuracy` is the paper's protocol (MetaMath's extraction after "The answer is: ");
`accuracy_lenient` beside it also accepts "####", \\boxed{} and the last number (not the paper's).
Without --data the test split is read from the data folder ($BALORA_DATA_DIR/gsm8k/test.jsonl, default
data/) when it is there, else from the hub (openai/gsm8k).

    balora-eval-gsm8k --model smollm2-135m-instruct --limit 50 --max_new_tokens 256 --output_dir out/gsm8k
    balora-eval-gsm8k --samples completions.jsonl --data data/gsm8k/test.jsonl --output_dir out/g
    (from a checkout: python eval/gsm8k.py ..., the same command)
"""

from __future__ import annotations

import sys

from balora.cli.command import run_command
from balora.eval import gsm8k
from balora.eval.data import benchmark_file
from balora.eval.runner import Benchmark, EvalArguments, int_task_id, run
from balora.repro.config import parse_args


def main(argv: list[str] | None = None) -> dict:
    """Evaluate and return metrics.json's content (score = accuracy in percent)."""
    (args,) = parse_args((EvalArguments,), argv, description=__doc__)
    tasks, data_info = gsm8k.load_tasks(benchmark_file(args.data, gsm8k.DATA_FILE), args.limit)
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


def report(metrics: dict) -> str:
    return (
        f"gsm8k score={metrics['score']:.2f} (paper protocol) "
        f"accuracy_lenient={metrics['accuracy_lenient']:.2f} (lenient reading) n={metrics['n']}"
    )


def cli() -> int:
    """Console entry point `balora-eval-gsm8k` (and `python eval/gsm8k.py`): returns the exit status."""
    return run_command(main, report)


if __name__ == "__main__":
    sys.exit(cli())
