"""CPU quick start: LoRA vs PiSSA vs BA-LoRA on a real small model, offline, in minutes.

    python quickstart.py                      # SmolLM2-135M-Instruct, embedded arithmetic problems
    python quickstart.py --model tiny-llama --max_steps 4 --eval_limit 8   # seconds (random model)

Trains the three methods with configs/smollm2/arithmetic.yaml (only --method and the regulariser
preset differ; the package's copy, balora/repro/nlg_configs.py, so the installed command needs no
checkout), scores the base model and each fine-tune on held-out problems with the GSM8K grader
(answer after "The answer is: "), and prints a comparison table. Runs that finished are reused, so
an interrupted quick start resumes. Outputs: outputs/quickstart/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from balora.cli import eval_gsm8k, lifecycle, train_nlg
from balora.repro.data import arithmetic_word_problems
from balora.repro.nlg_configs import quickstart_config

METHODS = {  # name -> train_nlg flags
    "LoRA": ["--method", "lora", "--regularizer_preset", "none"],
    "PiSSA": ["--method", "pissa", "--regularizer_preset", "none"],
    "BA-LoRA": ["--method", "ba-lora", "--regularizer_preset", "iclr2026"],
}


def write_heldout(path: Path, n: int) -> None:
    """Held-out problems (a generator seed never used for training) in GSM8K's question/#### format."""
    rows = arithmetic_word_problems(n, seed=987_654)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps({"question": row["query"], "answer": f"#### {row['answer']}"}) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max_steps", type=int, default=40)
    parser.add_argument("--eval_limit", type=int, default=40)
    parser.add_argument("--output_dir", default="outputs/quickstart")
    args = parser.parse_args(argv)

    out = Path(args.output_dir)
    heldout = out / "heldout.jsonl"
    write_heldout(heldout, args.eval_limit)
    config = out / "arithmetic.yaml"  # configs/smollm2/arithmetic.yaml, from the package
    config.write_text(quickstart_config())
    eval_flags = [
        "--data",
        str(heldout),
        "--limit",
        str(args.eval_limit),
        "--max_new_tokens",
        "64",
        "--batch_size",
        "20",
    ]
    rows = []
    base = eval_gsm8k.main(["--model", args.model, "--output_dir", str(out / "eval_base"), *eval_flags])
    rows.append({"method": "base model", "trainable": 0, "train_loss": None, "accuracy": base["score"]})
    for name, flags in METHODS.items():
        run_dir = out / name.lower()
        if (run_dir / "metrics.json").exists():
            metrics = json.loads((run_dir / "metrics.json").read_text())
        else:
            metrics = train_nlg.main(
                [
                    "--config",
                    str(config),
                    "--model_name_or_path",
                    args.model,
                    "--max_steps",
                    str(args.max_steps),
                    "--output_dir",
                    str(run_dir),
                    "--overwrite_output_dir",
                    *flags,
                ]
            )
        scored = eval_gsm8k.main(
            [
                "--model",
                args.model,
                "--adapter",
                str(run_dir / "adapter_lora"),
                "--output_dir",
                str(run_dir / "eval_heldout"),
                *eval_flags,
            ]
        )
        rows.append(
            {
                "method": name,
                "trainable": metrics["trainable_params"],
                "train_loss": metrics.get("train_loss"),
                "accuracy": scored["score"],
            }
        )

    print(f"\n{args.model}, {args.max_steps} steps, held-out arithmetic problems (n={args.eval_limit}):")
    print(f"| {'method':<10} | {'trainable':>10} | {'train loss':>10} | {'accuracy %':>10} |")
    print(f"|{'-' * 12}|{'-' * 11}:|{'-' * 11}:|{'-' * 11}:|")
    for row in rows:
        loss = "-" if row["train_loss"] is None else f"{row['train_loss']:.4f}"
        print(f"| {row['method']:<10} | {row['trainable']:>10,} | {loss:>10} | {row['accuracy']:>10.1f} |")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    return rows


def cli(argv: list[str] | None = None) -> int:
    """Console entry point: the command line, returning the exit status."""
    logging.basicConfig(level=logging.WARNING)
    return lifecycle.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
