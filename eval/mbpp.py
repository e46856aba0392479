"""MBPP pass@1 (%) on the test split (task_id 11-510): original (500) or sanitized (257) tasks.

    python eval/mbpp.py --model M [--adapter DIR] --data data/mbpp/mbpp.jsonl --output_dir out/mbpp
    python eval/mbpp.py --samples completions.jsonl --data data/mbpp/sanitized-mbpp.json --output_dir D
    python eval/mbpp.py ... --data data/mbpp/MbppPlus.jsonl   # EvalPlus tasks: score (base) + plus_pass@1

Also writes evalplus_samples.jsonl (Mbpp/N, solution) for cross-checking with evalplus itself.
"""

import logging
import os
import re
import sys
from dataclasses import asdict, dataclass, field

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from balora.eval import code  # noqa: E402
from balora.eval.runner import Benchmark, EvalArguments, int_task_id, run  # noqa: E402
from balora.eval.samples import write_evalplus_samples  # noqa: E402
from balora.repro.config import parse_args  # noqa: E402


@dataclass
class MbppArguments:
    mbpp_variant: str = field(
        default="full",
        metadata={"help": "Hub config when --data is not given: full (500 test tasks) or sanitized (257)."},
    )


def mbpp_id(raw):
    """MBPP task ids are integers; "Mbpp/N" (EvalPlus style) is accepted as N."""
    if isinstance(raw, str) and re.fullmatch(r"Mbpp/\d+", raw):
        raw = raw.split("/")[1]
    return int_task_id(raw)


def main(argv: list[str] | None = None) -> dict:
    """Evaluate and return metrics.json's content (score = pass@1 in percent)."""
    args, code_args, mbpp_args = parse_args((EvalArguments, code.CodeArguments, MbppArguments), argv)
    tasks, data_info = code.load_mbpp(args.data, args.limit, mbpp_args.mbpp_variant)
    limits = code_args.limits()
    bench = Benchmark(
        name="mbpp",
        protocol=code.MBPP_PROTOCOL,
        protocol_version=code.MBPP_VERSION,
        tasks=tasks,
        data_info=data_info,
        normalize_id=mbpp_id,
        num_samples=code_args.num_samples,
        grade=lambda pairs: code.grade_programs(
            pairs,
            code.mbpp_program,
            limits,
            code_args.workers,
            code_args.allow_weak_isolation,
            code_args.plus_limits(),
        ),
        summarize=lambda rows: code.summarize_passes(rows, code_args.num_samples),
        extra_settings={
            "sandbox_limits": asdict(limits),
            "sandbox_limits_plus": asdict(code_args.plus_limits()),
            "instruction": code.MBPP_INSTRUCTION,
        },
    )
    metrics = run(bench, args)
    write_evalplus_samples(
        args.output_dir, lambda task_id: f"Mbpp/{task_id}"
    )  # for cross-checking with evalplus itself
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = main()
    print(f"mbpp score={metrics['score']:.2f} n={metrics['n']}")
