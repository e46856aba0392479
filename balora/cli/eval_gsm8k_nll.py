"""Teacher-forced NLL (nats per token) of the GSM8K reference solutions under a model (lower is better).

The low-noise companion of balora-eval-gsm8k for small models (protocol: balora/eval/answer_nll.py).
Without --data the test split is read from $BALORA_DATA_DIR/gsm8k/test.jsonl (default data/) when it
is there, else from the hub.

    balora-eval-gsm8k-nll --model smollm2-135m-instruct --adapter RUN/adapter_lora --limit 64 \
        --output_dir out/gsm8k_nll
    (from a checkout: python eval/gsm8k_nll.py ..., the same command)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from balora.cli.command import run_command
from balora.eval import answer_nll, gsm8k
from balora.eval.data import benchmark_file
from balora.eval.generation import load_model
from balora.eval.samples import build_metrics, write_results
from balora.repro.config import parse_args


@dataclass
class NllArguments:
    output_dir: str = field(metadata={"help": "Where samples.jsonl and metrics.json are written."})
    model: str = field(metadata={"help": "A path, a hub id, an embedded name or tiny-llama (tests)."})
    adapter: str | None = field(
        default=None,
        metadata={
            "help": "peft adapter dir (PiSSA: <run>/adapter_lora on the original base, as for eval/gsm8k.py)."
        },
    )
    data: str | None = field(
        default=None,
        metadata={
            "help": "Local GSM8K JSONL; default: gsm8k/test.jsonl of the data folder ($BALORA_DATA_DIR, "
            "default data/) when there, else the hub test split."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Score the first N problems (file order)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass."})
    max_length: int = field(
        default=512,
        metadata={
            "help": "Token cap of prompt + solution + EOS; truncated problems are counted in metrics.json."
        },
    )
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16."}
    )
    seed: int = field(default=42, metadata={"help": "Recorded only: the computation is deterministic."})

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")


def main(argv: list[str] | None = None) -> dict:
    """Score and return metrics.json's content (score = NLL per solution token, nats)."""
    (args,) = parse_args((NllArguments,), argv, description=__doc__)
    start = time.time()
    tasks, data_info = gsm8k.load_tasks(benchmark_file(args.data, gsm8k.DATA_FILE), args.limit)
    model, tokenizer = load_model(args.model, args.adapter, dtype=args.dtype)
    rows = [{"question": t["question"], "answer": t["solution"]} for t in tasks]
    examples = answer_nll.reference_examples(rows, tokenizer, args.max_length)
    with tqdm(total=len(examples), desc="gsm8k_nll", unit="problem") as bar:
        per_example = answer_nll.response_nll(
            model, examples, tokenizer.pad_token_id, args.batch_size, progress=bar.update
        )
    samples = [
        {
            "task_id": t["task_id"],
            "nll": nll,
            "tokens": n,
            "nll_per_token": nll / n,
            "truncated": e["truncated"],
        }
        for t, e, (nll, n) in zip(tasks, examples, per_example, strict=True)
    ]
    summary = answer_nll.summarize(per_example)
    settings = {
        "model": args.model,
        "adapter": args.adapter,
        "limit": args.limit,
        "data": data_info,
        "max_length": args.max_length,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
    }
    metrics = build_metrics(
        benchmark="gsm8k_nll",
        score=round(summary["nll_per_token"], 6),
        n=len(tasks),
        protocol=answer_nll.PROTOCOL,
        protocol_version=answer_nll.PROTOCOL_VERSION,
        settings=settings,
        start_time=start,
        seed=args.seed,
        extra={**summary, "truncated": sum(s["truncated"] for s in samples)},
    )
    write_results(args.output_dir, samples, metrics)
    return metrics


def report(metrics: dict) -> str:
    return f"gsm8k_nll score={metrics['score']:.4f} nats/token (ppl {metrics['perplexity']:.2f}) n={metrics['n']}"


def cli() -> int:
    """Console entry point `balora-eval-gsm8k-nll` (and `python eval/gsm8k_nll.py`): returns the exit status."""
    return run_command(main, report)


if __name__ == "__main__":
    sys.exit(cli())
