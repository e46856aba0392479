"""MBPP pass@1 (%) on the test split (task_id 11-510): original (500) or sanitized (257) tasks.

    balora-eval-mbpp --model M [--adapter DIR] --output_dir out/mbpp
    balora-eval-mbpp --samples completions.jsonl --data data/mbpp/sanitized-mbpp.json --output_dir D
    balora-eval-mbpp ... --data data/mbpp/MbppPlus.jsonl   # EvalPlus tasks: score (base) + plus_pass@1
    (from a checkout: python eval/mbpp.py ..., the same command)

Without --data the tasks are read from the data folder ($BALORA_DATA_DIR, default data/:
mbpp/mbpp.jsonl, or mbpp/sanitized-mbpp.json with --mbpp_variant sanitized) when the file is there,
else from the hub. Also writes evalplus_samples.jsonl (Mbpp/N, solution) for cross-checking with
evalplus itself.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from balora.cli.command import run_command
from balora.eval import code
from balora.eval.data import benchmark_file, hub_errors
from balora.eval.runner import EvalArguments, int_task_id
from balora.eval.sandbox import SandboxSetupError, WeakIsolationError
from balora.repro.config import parse_args

# The data folder's copies of the hub configs (scripts/fetch_data.py).
MBPP_DATA_FILES = {"full": "mbpp/mbpp.jsonl", "sanitized": "mbpp/sanitized-mbpp.json"}


@dataclass
class MbppArguments:
    mbpp_variant: str = field(
        default="full",
        metadata={
            "help": "Without --data: full (500 test tasks, mbpp/mbpp.jsonl of the data folder) or sanitized "
            "(257, mbpp/sanitized-mbpp.json); the hub config of the same name when the file is not there."
        },
    )

    def __post_init__(self):
        if self.mbpp_variant not in MBPP_DATA_FILES:
            raise ValueError(f"--mbpp_variant must be full or sanitized, got {self.mbpp_variant!r}")


def mbpp_id(raw):
    """MBPP task ids are integers; "Mbpp/N" (EvalPlus style) is accepted as N."""
    if isinstance(raw, str) and re.fullmatch(r"Mbpp/\d+", raw):
        raw = raw.split("/")[1]
    return int_task_id(raw)


def main(argv: list[str] | None = None) -> dict:
    """Evaluate and return metrics.json's content (score = pass@1 in percent)."""
    args, code_args, mbpp_args = parse_args(
        (EvalArguments, code.CodeArguments, MbppArguments), argv, description=__doc__
    )
    relative = MBPP_DATA_FILES[mbpp_args.mbpp_variant]
    data = benchmark_file(args.data, relative)
    if data is None:
        with hub_errors(code.MBPP_HUB_ID, relative):
            tasks, data_info = code.load_mbpp(None, args.limit, mbpp_args.mbpp_variant)
    else:
        tasks, data_info = code.load_mbpp(data, args.limit, mbpp_args.mbpp_variant)
    return code.run_code_benchmark(
        args,
        code_args,
        name="mbpp",
        protocol=code.MBPP_PROTOCOL,
        protocol_version=code.MBPP_VERSION,
        tasks=tasks,
        data_info=data_info,
        normalize_id=mbpp_id,
        build_program=code.mbpp_program,
        instruction=code.MBPP_INSTRUCTION,
        evalplus_id=lambda task_id: f"Mbpp/{task_id}",
    )


def report(metrics: dict) -> str:
    return f"mbpp score={metrics['score']:.2f} n={metrics['n']}"


def cli() -> int:
    """Console entry point `balora-eval-mbpp` (and `python eval/mbpp.py`): returns the exit status."""
    # The sandbox's refusals say what the machine lacks and how to proceed: user errors, not bugs.
    return run_command(main, report, user_errors=(WeakIsolationError, SandboxSetupError))


if __name__ == "__main__":
    sys.exit(cli())
