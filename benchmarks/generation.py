"""Batched generation vs one-prompt-at-a-time `generate`, side by side in one run (CPU).

    python benchmarks/generation.py                       # SmolLM2, 32 GSM8K prompts, 256 new tokens
    python benchmarks/generation.py --num_prompts 8 --max_new_tokens 32   # quick check

Both arms decode the same prompts greedily with the same stop strings through the same code path
(balora.eval.generation.generate_hf), once with all prompts in length-sorted left-padded batches and once
with batch size 1. Tokens are the generated completions' tokens (after stop-string cuts), so both
arms count the same work; greedy outputs are checked to be identical. Last line: `speedup=<ratio>`.
"""

import argparse
import json
import os
import time

import torch

from balora.eval.generation import DecodingConfig, generate_hf, load_model
from balora.repro.data import data_dir
from balora.repro.prompts import format_prompt

DEFAULT_DATA = str(data_dir() / "gsm8k" / "test.jsonl")


def main(argv: list[str] | None = None) -> dict:
    """Run both arms and return {batched: {...}, sequential: {...}, speedup, identical_outputs}."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=DEFAULT_DATA, help="GSM8K JSONL (question/answer rows)")
    parser.add_argument("--num_prompts", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=None, help="default: all prompts in one batch")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 = comparable on a shared CPU)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available, in bf16) | cpu | cuda")
    parser.add_argument("--output", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not os.path.isfile(args.data):
        raise FileNotFoundError(
            f"--data {args.data} not found (GSM8K test JSONL; python scripts/fetch_data.py puts it in the data folder)"
        )
    with open(args.data) as handle:
        questions = [json.loads(line)["question"] for line in handle if line.strip()][: args.num_prompts]
    prompts = [format_prompt(q) for q in questions]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model, tokenizer = load_model(args.model, device=device)
    batch_size = args.batch_size or len(prompts)

    def arm(size: int) -> tuple[list[str], dict]:
        cfg = DecodingConfig(max_new_tokens=args.max_new_tokens, batch_size=size)
        start = time.perf_counter()
        completions = generate_hf(model, tokenizer, prompts, cfg)
        seconds = time.perf_counter() - start
        tokens = sum(len(ids) for ids in tokenizer(completions, add_special_tokens=False)["input_ids"])
        return completions, {
            "batch_size": size,
            "seconds": round(seconds, 2),
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 2),
        }

    generate_hf(model, tokenizer, prompts[:1], DecodingConfig(max_new_tokens=4, batch_size=1))  # warm-up
    batched_out, batched = arm(batch_size)
    print(
        f"batched    (batch {batch_size:>3}): {batched['tokens']} tokens in {batched['seconds']:.1f} s = "
        f"{batched['tokens_per_s']:.1f} tokens/s",
        flush=True,
    )
    sequential_out, sequential = arm(1)
    print(
        f"sequential (batch   1): {sequential['tokens']} tokens in {sequential['seconds']:.1f} s = "
        f"{sequential['tokens_per_s']:.1f} tokens/s",
        flush=True,
    )
    identical = sum(a == b for a, b in zip(batched_out, sequential_out, strict=True))
    result = {
        "model": args.model,
        "num_prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "device": device,
        "dtype": str(next(model.parameters()).dtype),
        "batched": batched,
        "sequential": sequential,
        "identical_outputs": f"{identical}/{len(prompts)}",
        "speedup": round(batched["tokens_per_s"] / sequential["tokens_per_s"], 2),
    }
    print(f"identical greedy outputs: {identical}/{len(prompts)}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(result, handle, indent=2)
    print(f"speedup={result['speedup']:.2f}")
    return result


if __name__ == "__main__":
    main()
