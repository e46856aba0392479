"""Training-step cost of BA-LoRA vs PiSSA on the same model and batch, measured side by side.

    python benchmarks/overhead.py                       # NLG: SmolLM2-135M, batch 4 × 256, r = 8
    python benchmarks/overhead.py --mode nlu            # NLU: MiniLM-L6, batch 32 × 128, r = 8
    python benchmarks/overhead.py --model tiny-llama --steps 2   # seconds, for a smoke check

Each method runs in its own subprocess (so that peak memory is per method, not the max of both),
in alternating order (pissa, ba-lora, pissa, ba-lora, ... `--repeats` times) to cancel drift on a
shared machine. On a loaded machine that is not enough (step times drift several-fold within a
process): `--interleave` runs rounds of (PiSSA step, reference forward, BA-LoRA step) on one model in
one process and reports the medians of the per-round ratios; it measures no memory (mem_ratio=nan). A step is a full optimizer step of BALoRATrainer.training_step + AdamW; the
reported time is the median over timed steps and repeats. Peak memory is the peak RSS of the
process on CPU and the peak allocated CUDA memory on GPU.

The batch: NLG rows are real arithmetic word problems in the Alpaca format, packed to exactly
--seq_len tokens, with the loss (and the regularisers) on the response tokens only (~60% of rows);
NLU rows are random token ids with random labels (the cost does not depend on the text).

The floor: an exact BA-LoRA step cannot cost less than a PiSSA step plus one frozen reference forward
of the same batch. The PiSSA worker also times that reference forward (the trainer's own
`_reference_logits`, rows-only LM head included) after each step, so the floor is measured in the same
run: floor = PiSSA step + reference forward. What BA-LoRA costs above the floor is split by timing each
term alone (forward + backward of `regularizer_terms` on the step's own logits, reference logits and,
where the trainer uses it, hidden states) in the BA-LoRA worker; "rest" is the part of the gap the
terms do not explain (row gathering, the hook, timing noise).

    python benchmarks/overhead.py --sweep --threads 2   # N and V sweep on a tiny body (tiny-llama-256)

`--sweep` repeats the measurement over N rows (batch × (seq_len − 1), every token supervised) and V
(a `--vocab` head on the tiny-llama-256 body, up to a Gemma-size 262,144), and prints one table row per
point: the ratios and each term's cost, with the logits-space SVD term beside the hidden-space one.

The last line is `step_ratio=<BA-LoRA/PiSSA> floor_ratio=<(PiSSA + reference forward)/PiSSA>
mem_ratio=<peak ratio>` (for --sweep: that of the last point).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _parse(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["nlg", "nlu"], default="nlg")
    parser.add_argument(
        "--model", default=None, help="default: smollm2-135m-instruct (nlg), all-minilm-l6-v2 (nlu)"
    )
    parser.add_argument("--batch", type=int, default=None, help="default: 4 (nlg), 32 (nlu)")
    parser.add_argument("--seq_len", type=int, default=None, help="default: 256 (nlg), 128 (nlu)")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--preset", default="iclr2026", help="BA-LoRA regulariser preset")
    parser.add_argument(
        "--svd_eigensolver", default=None, help="eigh (default) | lobpcg, for the BA-LoRA arm"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--output", default=None, help="also write the summary as JSON here")
    parser.add_argument(
        "--vocab",
        type=int,
        default=None,
        help="tiny models only: a head of this many classes, random token ids, every token supervised",
    )
    parser.add_argument("--term_repeats", type=int, default=3, help="repeats of each term's own timing")
    parser.add_argument("--sweep", action="store_true", help="sweep N (--sweep_rows) and V (--sweep_vocab)")
    parser.add_argument("--sweep_rows", default="256,1024", help="N values of --sweep (multiples of 256)")
    parser.add_argument("--sweep_vocab", default="32768,262144", help="V values of --sweep")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="time PiSSA step, reference forward and BA-LoRA step in rounds in one process "
        "(ratios per round: robust on a loaded machine; no peak memory)",
    )
    parser.add_argument(
        "--full_lm_head",
        action="store_true",
        help="both methods with rows_only_lm_head false: the LM head on every position, the rows tapped at "
        "its output (the default applies it to the supervised rows only)",
    )
    parser.add_argument(
        "--rows_only_lm_head", action="store_true", help="the default (the flag is kept for earlier commands)"
    )
    parser.add_argument(
        "--gathered_rows",
        action="store_true",
        help="BA-LoRA takes its regulariser rows by gathering them from the returned logits, with the full "
        "LM head (the path before the rows were taken at the LM head's output; same values and gradients)",
    )
    parser.add_argument(
        "--compare_heads",
        action="store_true",
        help="NLG: rounds of (PiSSA, BA-LoRA) steps with the full LM head and with rows_only_lm_head in one "
        "process; prints the speed-up of each method and both step ratios",
    )
    parser.add_argument(
        "--compare_rows",
        action="store_true",
        help="NLG: rounds of BA-LoRA steps with the regulariser rows taken at the LM head's output and "
        "gathered from the returned logits, in one process; prints the speed-up and checks that both "
        "give the same loss and gradients",
    )
    parser.add_argument(
        "--worker", choices=["pissa", "ba-lora", "both", "heads", "rows"], help=argparse.SUPPRESS
    )
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rows_only_lm_head = not args.full_lm_head
    args.model = args.model or ("smollm2-135m-instruct" if args.mode == "nlg" else "all-minilm-l6-v2")
    args.batch = args.batch or (4 if args.mode == "nlg" else 32)
    args.seq_len = args.seq_len or (256 if args.mode == "nlg" else 128)
    return args


def _nlg_batch(tokenizer, batch: int, seq_len: int):
    """(B, T) input_ids/labels: Alpaca-format arithmetic problems packed to exactly seq_len tokens."""
    import torch

    from balora.repro.data import arithmetic_word_problems, tokenize_example

    rows, examples = arithmetic_word_problems(200, seed=123), []
    for row in rows:
        example = tokenize_example(tokenizer, row["query"], row["response"], max_length=seq_len)
        if example is not None:  # None: no response token fits in seq_len (short --seq_len)
            examples.append(example)
    input_ids, labels = [], []
    stream_ids, stream_labels = [], []
    for example in examples:
        stream_ids += example["input_ids"]
        stream_labels += example["labels"]
        while len(stream_ids) >= seq_len and len(input_ids) < batch:
            input_ids.append(stream_ids[:seq_len])
            labels.append(stream_labels[:seq_len])
            stream_ids, stream_labels = stream_ids[seq_len:], stream_labels[seq_len:]
    if len(input_ids) < batch:
        raise ValueError(
            f"{len(examples)} of {len(rows)} embedded examples fit in --seq_len {seq_len} (a response "
            f"token within it), which fill {len(input_ids)} of --batch {batch} rows; "
            "raise --seq_len if few fit, else lower --batch"
        )
    ids = torch.tensor(input_ids)
    return {"input_ids": ids, "labels": torch.tensor(labels), "attention_mask": torch.ones_like(ids)}


def _worker(args) -> dict:
    import resource

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from balora import adapters
    from balora.repro import models
    from balora.trainer import BALoRATrainer, BALoRATrainingArguments

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.mode == "nlg":
        if args.model in models.TINY_CAUSAL_LMS:
            model, tokenizer = models.tiny_causal_lm(args.model, vocab_size=args.vocab)
        else:
            path = models.resolve_model_path(args.model)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if args.vocab:  # the sweep: every token supervised, so N = batch × (seq_len − 1)
            ids = torch.randint(4, args.vocab, (args.batch, args.seq_len))
            batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
        else:
            batch = _nlg_batch(tokenizer, args.batch, args.seq_len)
        target, save = None, None
    else:
        path = models.resolve_model_path(args.model)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        vocab = model.config.vocab_size
        ids = torch.randint(1000, vocab, (args.batch, args.seq_len))
        batch = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(0, 2, (args.batch,)),
        }
        target = [n for n in adapters.linear_module_names(model) if n not in ("classifier",)]
        save = ["classifier"]
    model = adapters.prepare_model(
        model,
        adapters.AdapterConfig(
            method="pissa", r=args.r, alpha=args.r, target_modules=target, modules_to_save=save
        ),
    ).to(device)
    batch = {k: v.to(device) for k, v in batch.items()}

    def make_trainer(
        preset: str,
        tmp: str,
        rows_only_lm_head: bool = args.rows_only_lm_head,
        gathered_rows: bool = args.gathered_rows,
    ):
        training_args = BALoRATrainingArguments(
            output_dir=tmp,
            rows_only_lm_head=rows_only_lm_head and not gathered_rows,  # rows gathered from full logits
            regularizer_preset=preset,
            regularizer_task=args.mode,
            report_to="none",
            svd_eigensolver=args.svd_eigensolver if preset != "none" else None,
            # The same batch repeats here: the NLU reference cache would hide the first-epoch cost.
            cache_reference_logits=False,
            use_cpu=device == "cpu",
            bf16=args.bf16,
            per_device_train_batch_size=args.batch,
            learning_rate=1e-5,
            max_steps=args.warmup + args.steps,
            disable_tqdm=True,
        )
        trainer = BALoRATrainer(model=model, args=training_args)
        trainer._tap_rows_enabled = not gathered_rows
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # normally set by the training loop
        return trainer

    def timed_step(trainer) -> float:
        _sync(device)
        start = time.perf_counter()
        trainer.training_step(model, dict(batch), num_items_in_batch=None)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - start

    def timed_reference(trainer) -> float:
        start = time.perf_counter()
        _reference_rows(trainer, model, batch)
        _sync(device)
        return time.perf_counter() - start

    def timed_rounds(trainers) -> list[tuple[float, ...]]:
        """--warmup + --steps rounds of one step of each trainer in turn; the timed rounds."""
        rounds = []
        for step in range(args.warmup + args.steps):
            times = tuple(timed_step(trainer) for trainer in trainers)
            if step >= args.warmup:
                rounds.append(times)
        return rounds

    if args.worker == "heads":  # --compare_heads: each method with the full head and the rows-only head
        with tempfile.TemporaryDirectory() as tmp:
            trainers = [
                make_trainer(preset, tmp, rows_only)
                for preset in ("none", args.preset)
                for rows_only in (False, True)
            ]
            model.train()
            with torch.no_grad():  # the check beside the timing: both heads give the same loss
                losses = [float(trainer.compute_loss(model, dict(batch))) for trainer in trainers]
            rounds = timed_rounds(trainers)
        return {
            "method": "heads",
            "rounds": rounds,  # (PiSSA full, PiSSA rows-only, BA-LoRA full, BA-LoRA rows-only)
            "losses": losses,  # the same order, on the same weights before the first step
            "student_head_path": trainers[-1].student_head_path,
            "device": device,
            "regularized_rows": _rows_count(batch, args),
            "tokens": int(batch["input_ids"].numel()),
            "threads": torch.get_num_threads(),
        }

    if args.worker == "rows":  # --compare_rows: BA-LoRA with the rows tapped at the head and gathered
        with tempfile.TemporaryDirectory() as tmp:
            trainers = [  # the full head: rows tapped at its output vs gathered from the logits
                make_trainer(args.preset, tmp, rows_only_lm_head=False, gathered_rows=gathered)
                for gathered in (False, True)
            ]
            model.train()
            checks = []  # the check beside the timing: the same loss and gradients, bit for bit
            for trainer in trainers:
                torch.manual_seed(0)  # the same dropout masks, if the adapter has dropout
                loss = trainer.compute_loss(model, dict(batch))
                loss.backward()
                grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
                model.zero_grad(set_to_none=True)
                checks.append((float(loss.detach()), grads))
            identical = checks[0][0] == checks[1][0] and all(
                torch.equal(a, b) for a, b in zip(checks[0][1], checks[1][1], strict=True)
            )
            rounds = timed_rounds(trainers)
        return {
            "method": "rows",
            "rounds": rounds,  # (BA-LoRA rows tapped, BA-LoRA rows gathered)
            "losses": [checks[0][0], checks[1][0]],
            "identical_loss_and_gradients": identical,
            "device": device,
            "regularized_rows": _rows_count(batch, args),
            "threads": torch.get_num_threads(),
        }

    if args.worker == "both":  # --interleave: PiSSA step, reference forward, BA-LoRA step, in rounds
        with tempfile.TemporaryDirectory() as tmp:
            pissa, ba_lora = make_trainer("none", tmp), make_trainer(args.preset, tmp)
            model.train()
            rounds = []
            for step in range(args.warmup + args.steps):
                times = (timed_step(pissa), timed_reference(pissa), timed_step(ba_lora))
                if step >= args.warmup:
                    rounds.append(times)
            term_times = _term_times(ba_lora, model, batch, device, args)
        return {
            "method": "both",
            "rounds": rounds,
            "term_times": term_times,
            "svd_path": ba_lora.svd_path,
            "device": device,
            "regularized_rows": _rows_count(batch, args),
            "threads": torch.get_num_threads(),
        }

    preset = "none" if args.worker == "pissa" else args.preset
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(preset, tmp)
        model.train()
        times, reference_times = [], []
        for step in range(args.warmup + args.steps):
            step_time = timed_step(trainer)
            # The floor's second part: one reference forward of the same batch, as BA-LoRA runs it.
            reference_time = timed_reference(trainer) if args.worker == "pissa" else None
            if step >= args.warmup:
                times.append(step_time)
                if reference_time is not None:
                    reference_times.append(reference_time)
        term_times = _term_times(trainer, model, batch, device, args) if args.worker == "ba-lora" else {}
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "method": args.worker,
        "step_times": times,
        "reference_times": reference_times,
        "term_times": term_times,
        "svd_path": trainer.svd_path,
        "peak_bytes": int(peak),
        "device": device,
        "regularized_rows": _rows_count(batch, args),
        "threads": torch.get_num_threads(),
    }


def _rows_count(batch: dict, args) -> int:
    if args.mode == "nlu":
        return args.batch
    return int((batch["labels"][:, 1:] != -100).sum())


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _reference_rows(trainer, model, batch: dict):
    """The reference logits on the step's regulariser rows, as the trainer computes them."""
    from balora.row_capture import supervised_rows

    capture = trainer._row_capture(model, return_outputs=False)
    return trainer._reference_logits(model, dict(batch), supervised_rows(batch.get("labels")), capture)


def _term_times(trainer, model, batch: dict, device: str, args) -> dict:
    """Median seconds of each term's forward + backward alone, and of the three together, on this step's
    own logits rows, reference logits and (where the trainer uses the hidden-space SVD term) hidden states."""
    import statistics

    import torch

    from balora.regularizers import TERMS, regularizer_terms
    from balora.row_capture import gather_rows as _gather
    from balora.row_capture import supervised_rows

    capture = trainer._row_capture(model, return_outputs=False)
    rows = supervised_rows(batch.get("labels"))
    head = capture.svd_head
    captured = []
    hook = head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0])) if head else None
    with torch.no_grad():
        logits = _gather(model(**batch).logits, rows).detach()
    if hook is not None:
        hook.remove()
    ref = _reference_rows(trainer, model, batch).detach()
    hidden = {}
    if head is not None:
        hidden = {"hidden": _gather(captured[0], rows).detach(), "head_factor": trainer._head_factor(head)}
    cfg = trainer._regularizer_config
    n, vocab = logits.shape[-2] if logits.dim() == 3 else logits.shape[0], logits.shape[-1]

    def timed(names, with_hidden=True):
        leaves = {"logits": logits.clone().requires_grad_()}
        extra = {}
        if with_hidden and hidden:
            extra = {
                "hidden": hidden["hidden"].clone().requires_grad_(),
                "head_factor": hidden["head_factor"],
            }
        times = []
        for _ in range(args.term_repeats + 1):  # the first is a warm-up
            _sync(device)
            start = time.perf_counter()
            out = regularizer_terms(leaves["logits"], ref, None, cfg, terms=names, **extra)
            sum(out[t] for t in names).backward()
            _sync(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    result = {term: timed((term,)) for term in TERMS}
    result["together"] = timed(TERMS)
    if hidden and n * n * vocab <= (
        2e13 if device == "cuda" else 3e10
    ):  # the logits-space SVD term, where affordable
        result["svd_logits_space"] = timed(("svd",), with_hidden=False)
    return result


def _measure(args, worker_argv: list[str], quiet: bool = False) -> dict:
    """Run the PiSSA and BA-LoRA workers alternately `--repeats` times; the summary of the comparison."""
    base_cmd = [sys.executable, __file__, *worker_argv]
    results = {"pissa": [], "ba-lora": []}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if args.compare_heads:
        return _measure_heads(args, base_cmd, env, quiet)
    if args.compare_rows:
        rounds, runs = _run_rounds(args, base_cmd, env, quiet, "rows", "BA-LoRA rows tapped, rows gathered")
        return {
            "step_s": {
                "ba-lora rows tapped": statistics.median(r[0] for r in rounds),
                "ba-lora rows gathered": statistics.median(r[1] for r in rounds),
            },
            "speedup": statistics.median(r[1] / r[0] for r in rounds),
            "losses": runs[0]["losses"],
            "identical_loss_and_gradients": all(r["identical_loss_and_gradients"] for r in runs),
            **_setting(args, runs[0]),
            "rounds": rounds,
        }
    if args.interleave:
        return _measure_interleaved(args, base_cmd, env, quiet)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for method in ("pissa", "ba-lora"):
                out = Path(tmp) / f"{method}-{repeat}.json"
                result = _run_worker(base_cmd, method, out, env)
                results[method].append(result)
                if not quiet:
                    print(
                        f"  {method:8s} repeat {repeat}: steps {[f'{t:.3f}' for t in result['step_times']]} s, "
                        f"peak {result['peak_bytes'] / 2**20:.0f} MiB, regularised rows {result['regularized_rows']}",
                        flush=True,
                    )
    step = {m: statistics.median(t for r in rs for t in r["step_times"]) for m, rs in results.items()}
    peak = {m: max(r["peak_bytes"] for r in rs) for m, rs in results.items()}
    reference = statistics.median(t for r in results["pissa"] for t in r["reference_times"])
    floor = step["pissa"] + reference
    terms = {
        name: statistics.median(r["term_times"][name] for r in results["ba-lora"])
        for name in results["ba-lora"][0]["term_times"]
    }
    above = step["ba-lora"] - floor
    summary = {
        "step_s": step,
        "peak_bytes": peak,
        "step_ratio": step["ba-lora"] / step["pissa"],
        "floor_s": floor,
        "reference_forward_s": reference,
        "floor_ratio": floor / step["pissa"],
        "mem_ratio": peak["ba-lora"] / peak["pissa"],
        "above_floor_s": above,
        "term_s": terms,
        "svd_path": results["ba-lora"][0]["svd_path"],
        **_setting(args, results["pissa"][0]),
        "r": args.r,
        "bf16": args.bf16,
        "svd_eigensolver": args.svd_eigensolver or "eigh",
        "rows_only_lm_head": args.rows_only_lm_head,
        "gathered_rows": args.gathered_rows,
        "step_times": {m: [t for r in rs for t in r["step_times"]] for m, rs in results.items()},
        "reference_times": [t for r in results["pissa"] for t in r["reference_times"]],
    }
    return summary


def _run_worker(base_cmd: list[str], worker: str, out: Path, env: dict) -> dict:
    """One worker (`--worker <worker>`) in its own process, its result written to `out`; that result."""
    subprocess.run([*base_cmd, "--worker", worker, "--result", str(out)], check=True, env=env)
    return json.loads(out.read_text())


def _setting(args, worker_result: dict) -> dict:
    """What was measured and where: the fields every summary records (rows, device, threads, shapes)."""
    return {
        "rows": worker_result["regularized_rows"],
        "device": worker_result["device"],
        "threads": worker_result["threads"],
        "batch": args.batch,
        "seq_len": args.seq_len,
        "model": args.model,
        "vocab": args.vocab,
    }


def _run_rounds(
    args, base_cmd: list[str], env: dict, quiet: bool, worker: str, what: str
) -> tuple[list, list]:
    """Run the one-process `worker` (--repeats times); (all rounds, each run's result). `what` names the
    timings of a round in the progress lines."""
    rounds, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            out = Path(tmp) / f"{worker}-{repeat}.json"
            result = _run_worker(base_cmd, worker, out, env)
            runs.append(result)
            rounds += result["rounds"]
            if not quiet:
                timings = [tuple(round(t, 3) for t in r) for r in result["rounds"]]
                print(f"  repeat {repeat}: rounds ({what}) s {timings}", flush=True)
    return rounds, runs


def _measure_interleaved(args, base_cmd: list[str], env: dict, quiet: bool) -> dict:
    """--interleave: rounds of (PiSSA step, reference forward, BA-LoRA step) in one process per repeat; the
    ratios are medians of per-round ratios, so load that drifts between rounds cancels."""
    rounds, runs = _run_rounds(args, base_cmd, env, quiet, "both", "PiSSA, reference forward, BA-LoRA")
    pissa, reference, ba_lora = (statistics.median(r[i] for r in rounds) for i in range(3))
    terms = {name: statistics.median(r["term_times"][name] for r in runs) for name in runs[0]["term_times"]}
    step_ratio = statistics.median(r[2] / r[0] for r in rounds)
    floor_ratio = statistics.median((r[0] + r[1]) / r[0] for r in rounds)
    return {
        "step_s": {"pissa": pissa, "ba-lora": ba_lora},
        "peak_bytes": None,
        "step_ratio": step_ratio,
        "floor_s": pissa + reference,
        "reference_forward_s": reference,
        "floor_ratio": floor_ratio,
        "mem_ratio": float("nan"),
        "above_floor_s": (step_ratio - floor_ratio) * pissa,
        "term_s": terms,
        "svd_path": runs[0]["svd_path"],
        **_setting(args, runs[0]),
        "r": args.r,
        "bf16": args.bf16,
        "interleave": True,
        "svd_eigensolver": args.svd_eigensolver or "eigh",
        "rows_only_lm_head": args.rows_only_lm_head,
        "rounds": rounds,
    }


def _measure_heads(args, base_cmd: list[str], env: dict, quiet: bool) -> dict:
    """--compare_heads: medians of per-round ratios, full LM head over rows-only head, per method."""
    what = "PiSSA full head, PiSSA rows-only, BA-LoRA full head, BA-LoRA rows-only"
    rounds, runs = _run_rounds(args, base_cmd, env, quiet, "heads", what)
    medians = [statistics.median(r[i] for r in rounds) for i in range(4)]
    return {
        "step_s": dict(
            zip(("pissa", "pissa_rows_only", "ba-lora", "ba-lora_rows_only"), medians, strict=True)
        ),
        "speedup_pissa": statistics.median(r[0] / r[1] for r in rounds),
        "speedup_ba_lora": statistics.median(r[2] / r[3] for r in rounds),
        "step_ratio_full_head": statistics.median(r[2] / r[0] for r in rounds),
        "step_ratio_rows_only": statistics.median(r[3] / r[1] for r in rounds),
        "student_head_path": runs[0]["student_head_path"],
        "losses": runs[0]["losses"],
        "tokens": runs[0]["tokens"],
        **_setting(args, runs[0]),
        "rounds": rounds,
    }


def _terms_line(summary: dict) -> str:
    """The share of each term in the gap above the floor (each term timed alone; 'rest' = the unexplained)."""
    above, terms = summary["above_floor_s"], summary["term_s"]
    parts = []
    for name in ("consistency", "diversity", "svd"):
        share = f" ({100 * terms[name] / above:.0f}%)" if above > 0 else ""
        label = f"svd ({summary['svd_path']})" if name == "svd" else name
        parts.append(f"{label} {terms[name]:.3f} s{share}")
    rest = above - terms["together"]
    return (
        f"above the floor: {above:.3f} s = the three terms together {terms['together']:.3f} s "
        f"[alone: {', '.join(parts)}] + rest {rest:.3f} s"
    )


def _sweep(args, argv: list[str]) -> dict:
    """The N × V sweep on a tiny body: one table row per point (--repeats alternating runs each)."""
    rows_values = [int(v) for v in args.sweep_rows.split(",")]
    vocab_values = [int(v) for v in args.sweep_vocab.split(",")]
    keep = [a for a in argv if a != "--sweep"]
    model = (
        args.model
        if args.model in ("tiny-llama", "tiny-llama-256", "tiny-mistral-256", "tiny-gemma-256")
        else "tiny-llama-256"
    )
    header = (
        "| N rows | V | PiSSA s | ref fwd s | BA-LoRA s | step_ratio | floor_ratio | mem_ratio | KL ms | "
        "top-K entropy ms | SVD hidden ms | SVD logits ms | three together ms |"
    )
    print(header + "\n|" + "---:|" * 13, flush=True)
    points = []
    for vocab in vocab_values:
        for rows in rows_values:
            seq_len = 257
            batch = max(1, rows // (seq_len - 1))
            point_argv = [
                *keep,
                "--model",
                model,
                "--vocab",
                str(vocab),
                "--batch",
                str(batch),
                "--seq_len",
                str(seq_len),
            ]
            point_args = _parse(point_argv)
            summary = _measure(point_args, point_argv, quiet=True)
            terms = summary["term_s"]
            logits_svd = terms.get("svd_logits_space")
            print(
                f"| {summary['rows']} | {vocab} | {summary['step_s']['pissa']:.3f} | "
                f"{summary['reference_forward_s']:.3f} | {summary['step_s']['ba-lora']:.3f} | "
                f"{summary['step_ratio']:.3f} | {summary['floor_ratio']:.3f} | {summary['mem_ratio']:.3f} | "
                f"{1000 * terms['consistency']:.0f} | {1000 * terms['diversity']:.0f} | {1000 * terms['svd']:.1f} | "
                + (f"{1000 * logits_svd:.0f}" if logits_svd is not None else "—")
                + f" | {1000 * terms['together']:.0f} |",
                flush=True,
            )
            points.append(summary)
    return {"sweep": points, "model": model}


def main(argv=None) -> dict:
    args = _parse(argv)
    if args.worker:
        result = _worker(args)
        Path(args.result).write_text(json.dumps(result))
        return result
    argv = list(argv if argv is not None else sys.argv[1:])
    print(
        f"mode={args.mode} model={args.model} batch={args.batch}x{args.seq_len} r={args.r} "
        f"preset={args.preset} warmup={args.warmup} steps={args.steps} repeats={args.repeats}"
        + (" sweep" if args.sweep else "")
        + ("" if args.rows_only_lm_head else " full_lm_head")
        + (" gathered_rows" if args.gathered_rows else ""),
        flush=True,
    )
    if args.compare_heads:
        result = _measure(args, argv)
        steps = ", ".join(f"{name} {t:.3f} s" for name, t in result["step_s"].items())
        print(f"median step: {steps} ({result['rows']} of {result['tokens']} positions supervised)")
        full_p, rows_p, full_b, rows_b = result["losses"]
        print(
            f"loss on the same weights, full head vs rows-only: PiSSA {full_p:.6f} vs {rows_p:.6f}, "
            f"BA-LoRA {full_b:.6f} vs {rows_b:.6f}"
        )
        if args.output:
            Path(args.output).write_text(json.dumps(result, indent=2))
        print(
            f"rows_only_speedup pissa={result['speedup_pissa']:.3f} ba-lora={result['speedup_ba_lora']:.3f} "
            f"step_ratio full_head={result['step_ratio_full_head']:.3f} "
            f"rows_only={result['step_ratio_rows_only']:.3f}"
        )
        return result
    if args.compare_rows:
        result = _measure(args, argv)
        steps = ", ".join(f"{name} {t:.3f} s" for name, t in result["step_s"].items())
        print(f"median step: {steps} ({result['rows']} regularised rows)")
        if args.output:
            Path(args.output).write_text(json.dumps(result, indent=2))
        print(
            f"rows_tap_speedup={result['speedup']:.3f} "
            f"identical_loss_and_gradients={result['identical_loss_and_gradients']}"
        )
        return result
    if args.sweep:
        result = _sweep(args, argv)
        last = result["sweep"][-1]
    else:
        result = last = _measure(args, argv)
        print(
            f"median step: PiSSA {last['step_s']['pissa']:.3f} s, BA-LoRA {last['step_s']['ba-lora']:.3f} s, "
            f"floor (PiSSA + reference forward {last['reference_forward_s']:.3f} s) {last['floor_s']:.3f} s "
            f"(device {last['device']}, {last['threads']} threads, SVD term in {last['svd_path']})"
        )
        print(_terms_line(last))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    print(
        f"step_ratio={last['step_ratio']:.3f} floor_ratio={last['floor_ratio']:.3f} mem_ratio={last['mem_ratio']:.3f}"
    )
    return result


if __name__ == "__main__":
    main()
