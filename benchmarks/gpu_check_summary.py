"""Summary of one scripts/gpu_check.sh run: training cost and result per method, and the benchmarks.

    python benchmarks/gpu_check_summary.py outputs/gpu_check --methods pissa ba-lora

Reads <out>/<method>/train/{metrics,run,log_history}.json, <out>/<method>/eval_gsm8k*/metrics.json and
<out>/{overhead_*,regularizers_*,sweep,generation}.json; writes <out>/summary.md and <out>/summary.json and prints the
Markdown. A missing file is shown as "missing" in its row, never dropped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _load(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _first_logged(history: list[dict] | None, key: str) -> float | None:
    for entry in history or []:
        if key in entry:
            return entry[key]
    return None


def method_row(run_dir: Path) -> dict:
    """Training cost (wall time, tokens/s inputs, peak GPU memory) and scores of one method's run."""
    metrics = _load(run_dir / "train" / "metrics.json") or {}
    run = _load(run_dir / "train" / "run.json") or {}
    history = _load(run_dir / "train" / "log_history.json")
    steps = [e for e in history or [] if "task_loss" in e]
    gsm8k = _load(run_dir / "eval_gsm8k" / "metrics.json") or {}
    nll = _load(run_dir / "eval_gsm8k_nll" / "metrics.json") or {}
    peak = (run.get("peak_memory") or {}).get("gpu_allocated_peak")
    return {
        "train_runtime_s": metrics.get("train_runtime"),
        "steps": len(steps) or None,
        "samples_per_s": metrics.get("train_samples_per_second"),
        "gpu_peak_gib": round(peak / 2**30, 2) if peak else None,
        "task_loss_first": _first_logged(steps, "task_loss"),
        "task_loss_last": steps[-1]["task_loss"] if steps else None,
        "final_terms": metrics.get("final_logged"),
        "gsm8k_accuracy": gsm8k.get("score"),
        "gsm8k_n": gsm8k.get("n"),
        "gsm8k_nll": nll.get("score"),
    }


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "missing"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summarize(out_dir: Path, methods: list[str]) -> tuple[str, dict]:
    """(Markdown, JSON-able dict) of the run in out_dir."""
    rows = {m: method_row(out_dir / m) for m in methods}
    # sorted by tokens per batch (4 × 256 before 16 × 512), not by file name
    overhead = {p.stem: _load(p) for p in out_dir.glob("overhead_*.json")}
    overhead = dict(
        sorted(overhead.items(), key=lambda item: (item[1]["batch"] * item[1]["seq_len"], item[0]))
    )
    generation = _load(out_dir / "generation.json")
    env = (
        (out_dir / "environment.txt").read_text().strip()
        if (out_dir / "environment.txt").is_file()
        else "missing"
    )
    lines = [
        f"# GPU check ({out_dir})",
        "",
        "```",
        env,
        "```",
        "",
        "| method | steps | train s | samples/s | GPU peak GiB | task loss first → last | GSM8K acc % (n) | GSM8K NLL |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for method, row in rows.items():
        lines.append(
            f"| {method} | {_fmt(row['steps'])} | {_fmt(row['train_runtime_s'], 1)} | "
            f"{_fmt(row['samples_per_s'], 1)} | {_fmt(row['gpu_peak_gib'], 2)} | "
            f"{_fmt(row['task_loss_first'])} → {_fmt(row['task_loss_last'])} | "
            f"{_fmt(row['gsm8k_accuracy'], 2)} ({_fmt(row['gsm8k_n'])}) | {_fmt(row['gsm8k_nll'])} |"
        )
    for method, row in rows.items():
        if row["final_terms"]:
            terms = ", ".join(f"{k} {v:.4f}" for k, v in row["final_terms"].items())
            lines.append(f"\n{method}, last logged step: {terms}")
    lines += [
        "",
        "| overhead benchmark | PiSSA step s | BA-LoRA step s | step ratio | floor ratio | PiSSA peak MiB | "
        "BA-LoRA peak MiB | mem ratio | above floor: KL / top-K entropy / SVD ms (SVD path) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in overhead.values():
        solver = f", {result['svd_eigensolver']}" if result.get("svd_eigensolver", "eigh") != "eigh" else ""
        terms = result.get("term_s")
        split = (
            (
                f"{1000 * terms['consistency']:.1f} / {1000 * terms['diversity']:.1f} / {1000 * terms['svd']:.1f} "
                f"({result.get('svd_path')})"
            )
            if terms
            else "missing"
        )
        lines.append(
            f"| {result['batch']} × {result['seq_len']}, r = {result['r']}, bf16 {result['bf16']}{solver} | "
            f"{result['step_s']['pissa']:.4f} | {result['step_s']['ba-lora']:.4f} | {result['step_ratio']:.3f} | "
            f"{_fmt(result.get('floor_ratio'))} | "
            f"{result['peak_bytes']['pissa'] / 2**20:.0f} | {result['peak_bytes']['ba-lora'] / 2**20:.0f} | "
            f"{result['mem_ratio']:.3f} | {split} |"
        )
    if not overhead:
        lines.append("| missing | | | | | | | | |")
    sweep = _load(out_dir / "sweep.json")
    if sweep:
        lines += [
            "",
            f"| sweep ({sweep['model']}): N rows | V | step ratio | floor ratio | mem ratio | KL ms | "
            "top-K entropy ms | SVD hidden ms | SVD logits ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for point in sweep["sweep"]:
            terms = point["term_s"]
            lines.append(
                f"| {point['rows']} | {point['vocab']} | {point['step_ratio']:.3f} | {point['floor_ratio']:.3f} | "
                f"{point['mem_ratio']:.3f} | {1000 * terms['consistency']:.1f} | {1000 * terms['diversity']:.1f} | "
                f"{1000 * terms['svd']:.2f} | {_fmt(1000 * terms['svd_logits_space'] if 'svd_logits_space' in terms else None, 1)} |"
            )
    for path in sorted(out_dir.glob("regularizers_*.json")):
        bench = _load(path)
        lines += [
            "",
            f"| regulariser, fwd + bwd ({bench['rows']} rows × {bench['vocab']}, {bench['dtype']}) | median ms |",
            "|---|---:|",
        ]
        lines += [f"| {case} | {result['median_ms']:.2f} |" for case, result in bench["cases"].items()]
    rows_tap = _load(out_dir / "rows_tap_16x512.json")
    lines.append("")
    if rows_tap:
        steps = rows_tap["step_s"]
        lines.append(
            f"Regulariser rows taken at the LM head vs gathered ({rows_tap['batch']} × {rows_tap['seq_len']}, "
            f"{rows_tap['rows']} rows): BA-LoRA step {steps['ba-lora rows tapped']:.4f} s vs "
            f"{steps['ba-lora rows gathered']:.4f} s, {rows_tap['speedup']:.3f}× faster; identical loss and "
            f"gradients {rows_tap['identical_loss_and_gradients']}."
        )
    else:
        lines.append("Rows-tap comparison: missing.")
    lines.append("")
    if generation:
        b, s = generation["batched"], generation["sequential"]
        lines.append(
            f"Generation ({generation['num_prompts']} GSM8K prompts, ≤{generation['max_new_tokens']} new tokens, "
            f"{generation.get('device', '?')} {generation.get('dtype', '')}): batched (batch {b['batch_size']}) "
            f"{b['tokens_per_s']:.0f} tokens/s, one at a time {s['tokens_per_s']:.0f} tokens/s, speedup "
            f"{generation['speedup']:.1f}×; identical greedy outputs {generation['identical_outputs']}."
        )
    else:
        lines.append("Generation benchmark: missing.")
    return "\n".join(lines) + "\n", {
        "methods": rows,
        "overhead": overhead,
        "sweep": sweep,
        "generation": generation,
        "rows_tap": rows_tap,
        "environment": env,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--methods", nargs="+", default=["pissa", "ba-lora"])
    args = parser.parse_args(argv)
    if not args.out_dir.is_dir():
        raise SystemExit(f"error: {args.out_dir} is not a directory (the OUT_DIR of scripts/gpu_check.sh)")
    markdown, data = summarize(args.out_dir, args.methods)
    (args.out_dir / "summary.md").write_text(markdown)
    (args.out_dir / "summary.json").write_text(json.dumps(data, indent=2))
    print(markdown)


if __name__ == "__main__":
    main()
