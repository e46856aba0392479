"""Forward + backward time of each BA-LoRA regulariser alone, on random logits of N rows × V classes.

    python benchmarks/regularizers.py --rows 2598 --vocab 49152 --device cuda   # SmolLM2 16 × 512 batch
    python benchmarks/regularizers.py --rows 308 --vocab 49152 --threads 2      # the CPU benchmark's batch

Where benchmarks/overhead.py says how much slower a BA-LoRA step is, this says which term costs it.
Each case is timed as forward + backward of the unweighted term(s) from `regularizer_terms` with the
ICLR-2026 NLG preset (KL at T = 2, top-20 entropy, SVD top-10 / Frobenius). Cases: each term alone,
all three, and the SVD term's two parts: the N × N float64 Gram matrix (forward + backward) and the
eigenvalue solve of that Gram (`eigvalsh` with its backward, which needs the eigenvectors); for the
frobenius form, the same with `svd_eigensolver="lobpcg"` (top-k eigenpairs only); and the SVD term in
hidden space (`svd_loss_hidden`: logits = H Wᵀ with H of --hidden columns, what the trainer runs for
LLaMA-style heads), with "all three, svd in hidden space" (the trainer's step) and the once-per-run
`head_gram_factor(W)`. Reported: the median over --repeats after --warmup (synchronised on CUDA) and,
on CUDA, the peak memory. The last line is `slowest=<case> <ms>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from balora import _kernels, regularizers


def _parse(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=308, help="N supervised rows (response tokens of a batch)"
    )
    parser.add_argument(
        "--vocab", type=int, default=49152, help="V classes (SmolLM2: 49,152; LLaMA-2: 32,000)"
    )
    parser.add_argument(
        "--hidden", type=int, default=576, help="H_dim of the hidden-space SVD case (SmolLM2: 576)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtype", default="auto", help="logits dtype: auto (bfloat16 on cuda, else float32)")
    parser.add_argument("--preset", default="iclr2026")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.rows < 2 or args.vocab < 2:
        parser.error("--rows and --vocab must be at least 2")
    return args


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_case(fn, device: str, warmup: int, repeats: int) -> dict:
    """Median wall time (ms) of fn() (which runs forward + backward) and, on CUDA, its peak memory."""
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"median_ms": statistics.median(times), "times_ms": times, "peak_bytes": peak}


def main(argv=None) -> dict:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dtype = {
        "auto": torch.bfloat16 if device == "cuda" else torch.float32,
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }[args.dtype]
    cfg, _ = regularizers.preset(args.preset, "nlg")
    generator = torch.Generator().manual_seed(0)
    # Logit-like scale (std 3) so that softmaxes are neither flat nor one-hot.
    logits = (
        (3 * torch.randn(1, args.rows, args.vocab, generator=generator)).to(device, dtype).requires_grad_()
    )
    ref = (
        logits.detach().float() + 0.5 * torch.randn(1, args.rows, args.vocab, generator=generator).to(device)
    ).to(dtype)
    mask = torch.ones(1, args.rows, dtype=torch.bool, device=device)
    rows_b, rows_t = mask.nonzero(as_tuple=True)

    def terms(*names):
        def run():
            logits.grad = None
            out = regularizers.regularizer_terms(logits, ref, mask, cfg, terms=names)
            sum(out[name] for name in names).backward()

        return run

    def gram_only():
        logits.grad = None
        gram = _kernels.RowGram.apply(logits, rows_b, rows_t, cfg.chunk_size)
        gram.diagonal().sum().backward()

    gram_input = _kernels.RowGram.apply(logits.detach(), rows_b, rows_t, cfg.chunk_size)

    def eigen_only():
        gram = gram_input.clone().requires_grad_()
        torch.linalg.eigvalsh(gram)[-cfg.svd_top_k :].sum().backward()

    def lobpcg_only():
        gram = gram_input.clone().requires_grad_()
        _kernels.TopEigenvalues.apply(gram, cfg.svd_top_k, None).sum().backward()

    lobpcg_cfg = dataclasses.replace(cfg, svd_eigensolver="lobpcg")

    # Hidden space: H (N × H_dim) and a head W (V × H_dim); the logits above stand in for H Wᵀ in the
    # KL and entropy terms (their cost does not depend on the values).
    hidden = torch.randn(1, args.rows, args.hidden, generator=generator).to(device, dtype).requires_grad_()
    head = (torch.randn(args.vocab, args.hidden, generator=generator) / args.hidden**0.5).to(device, dtype)
    factor = regularizers.head_gram_factor(head)

    def svd_hidden():
        hidden.grad = None
        regularizers.svd_loss_hidden(hidden[0], factor, cfg, args.vocab).backward()

    def all_hidden():
        logits.grad = hidden.grad = None
        out = regularizers.regularizer_terms(logits, ref, mask, cfg, hidden=hidden, head_factor=factor)
        sum(out.values()).backward()

    def factor_once():
        regularizers.head_gram_factor(head)

    def svd_lobpcg():
        logits.grad = None
        regularizers.regularizer_terms(logits, ref, mask, lobpcg_cfg, terms=["svd"])["svd"].backward()

    cases = {
        "consistency": terms("consistency"),
        "diversity": terms("diversity"),
        "svd": terms("svd"),
        "all three": terms(*regularizers.TERMS),
        "svd: Gram fwd+bwd": gram_only,
        "svd: eigvalsh fwd+bwd": eigen_only,
    }
    if cfg.svd_normalizer == "frobenius" and args.rows >= 3 * cfg.svd_top_k:
        cases.update({"svd, lobpcg eigensolver": svd_lobpcg, "svd: lobpcg fwd+bwd": lobpcg_only})
    cases.update(
        {
            "svd, hidden space": svd_hidden,
            "all three, svd in hidden space": all_hidden,
            "head factor (once per run)": factor_once,
        }
    )
    print(
        f"rows={args.rows} vocab={args.vocab} hidden={args.hidden} device={device} dtype={str(dtype).removeprefix('torch.')} "
        f"preset={args.preset} threads={torch.get_num_threads()}",
        flush=True,
    )
    results = {}
    for name, fn in cases.items():
        results[name] = time_case(fn, device, args.warmup, args.repeats)
        peak = results[name]["peak_bytes"]
        print(
            f"  {name:32s} {results[name]['median_ms']:10.2f} ms"
            + (f"   peak {peak / 2**20:.0f} MiB" if peak else ""),
            flush=True,
        )
    summary = {
        "rows": args.rows,
        "vocab": args.vocab,
        "hidden": args.hidden,
        "device": device,
        "dtype": str(dtype),
        "cases": results,
    }
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(summary, handle, indent=2)
    per_step = [n for n in results if not n.startswith("all three") and n != "head factor (once per run)"]
    slowest = max(per_step, key=lambda n: results[n]["median_ms"])
    print(f"slowest={slowest} {results[slowest]['median_ms']:.2f}")
    return summary


if __name__ == "__main__":
    main()
