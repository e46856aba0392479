"""Training-step cost of BA-LoRA vs PiSSA on the same model and batch, measured side by side.

    python benchmarks/overhead.py                       # NLG: SmolLM2-135M, batch 4 × 256, r = 8
    python benchmarks/overhead.py --mode nlu            # NLU: MiniLM-L6, batch 32 × 128, r = 8
    python benchmarks/overhead.py --model tiny-llama --steps 2   # seconds, for a smoke check

Each method runs in its own subprocess (so that peak memory is per method, not the max of both),
in alternating order (pissa, ba-lora, pissa, ba-lora, ... `--repeats` times) to cancel drift on a
shared machine. A step is a full optimizer step of BALoRATrainer.training_step + AdamW; the
reported time is the median over timed steps and repeats. Peak memory is the peak RSS of the
process on CPU and the peak allocated CUDA memory on GPU.

The batch: NLG rows are real arithmetic word problems in the Alpaca format, packed to exactly
--seq_len tokens, with the loss (and the regularisers) on the response tokens only (~60% of rows);
NLU rows are random token ids with random labels (the cost does not depend on the text).

The last line is `step_ratio=<BA-LoRA/PiSSA> mem_ratio=<peak ratio>`.
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
sys.path.insert(0, str(REPO))


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["nlg", "nlu"], default="nlg")
    parser.add_argument("--model", default=None, help="default: smollm2-135m-instruct (nlg), all-minilm-l6-v2 (nlu)")
    parser.add_argument("--batch", type=int, default=None, help="default: 4 (nlg), 32 (nlu)")
    parser.add_argument("--seq_len", type=int, default=None, help="default: 256 (nlg), 128 (nlu)")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--preset", default="iclr2026", help="BA-LoRA regulariser preset")
    parser.add_argument("--svd_eigensolver", default=None, help="eigh (default) | lobpcg, for the BA-LoRA arm")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--output", default=None, help="also write the summary as JSON here")
    parser.add_argument("--worker", choices=["pissa", "ba-lora"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model = args.model or ("smollm2-135m-instruct" if args.mode == "nlg" else "all-minilm-l6-v2")
    args.batch = args.batch or (4 if args.mode == "nlg" else 32)
    args.seq_len = args.seq_len or (256 if args.mode == "nlg" else 128)
    return args


def _nlg_batch(tokenizer, batch: int, seq_len: int):
    """(B, T) input_ids/labels: Alpaca-format arithmetic problems packed to exactly seq_len tokens."""
    import torch

    from balora.data import arithmetic_word_problems, tokenize_example

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
        raise ValueError(f"{len(examples)} of {len(rows)} embedded examples fit in --seq_len {seq_len} (a response "
                         f"token within it), which fill {len(input_ids)} of --batch {batch} rows; "
                         "raise --seq_len if few fit, else lower --batch")
    ids = torch.tensor(input_ids)
    return {"input_ids": ids, "labels": torch.tensor(labels), "attention_mask": torch.ones_like(ids)}


def _worker(args) -> dict:
    import resource

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from balora import adapters, models
    from balora.trainer import BALoRATrainer, BALoRATrainingArguments

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.mode == "nlg":
        if args.model in models.TINY_CAUSAL_LMS:
            model, tokenizer = models.tiny_causal_lm(args.model)
        else:
            path = models.resolve_model_path(args.model)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        batch = _nlg_batch(tokenizer, args.batch, args.seq_len)
        target, save = None, None
    else:
        path = models.resolve_model_path(args.model)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        vocab = model.config.vocab_size
        ids = torch.randint(1000, vocab, (args.batch, args.seq_len))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                 "labels": torch.randint(0, 2, (args.batch,))}
        target = [n for n in adapters.linear_module_names(model) if n not in ("classifier",)]
        save = ["classifier"]
    model = adapters.prepare_model(model, adapters.AdapterConfig(
        method="pissa", r=args.r, alpha=args.r, target_modules=target, modules_to_save=save)).to(device)
    batch = {k: v.to(device) for k, v in batch.items()}
    preset = "none" if args.worker == "pissa" else args.preset
    with tempfile.TemporaryDirectory() as tmp:
        training_args = BALoRATrainingArguments(
            output_dir=tmp, regularizer_preset=preset, regularizer_task=args.mode, report_to="none",
            svd_eigensolver=args.svd_eigensolver if preset != "none" else None,
            # The same batch repeats here: the NLU reference cache would hide the first-epoch cost.
            cache_reference_logits=False,
            use_cpu=device == "cpu", bf16=args.bf16, per_device_train_batch_size=args.batch,
            learning_rate=1e-5, max_steps=args.warmup + args.steps, disable_tqdm=True)
        trainer = BALoRATrainer(model=model, args=training_args)
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # normally set by the training loop
        optimizer = trainer.optimizer
        model.train()
        times = []
        for step in range(args.warmup + args.steps):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.training_step(model, dict(batch), num_items_in_batch=None)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rows = int((batch["labels"][:, 1:] != -100).sum()) if args.mode == "nlg" else args.batch
    return {"method": args.worker, "step_times": times, "peak_bytes": int(peak), "device": device,
            "regularized_rows": rows, "threads": torch.get_num_threads()}


def main(argv=None) -> dict:
    args = _parse(argv)
    if args.worker:
        result = _worker(args)
        Path(args.result).write_text(json.dumps(result))
        return result
    base_cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
    results = {"pissa": [], "ba-lora": []}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    print(f"mode={args.mode} model={args.model} batch={args.batch}x{args.seq_len} r={args.r} "
          f"preset={args.preset} warmup={args.warmup} steps={args.steps} repeats={args.repeats}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for method in ("pissa", "ba-lora"):
                out = Path(tmp) / f"{method}-{repeat}.json"
                subprocess.run([*base_cmd, "--worker", method, "--result", str(out)], check=True, env=env)
                result = json.loads(out.read_text())
                results[method].append(result)
                print(f"  {method:8s} repeat {repeat}: steps {[f'{t:.3f}' for t in result['step_times']]} s, "
                      f"peak {result['peak_bytes'] / 2**20:.0f} MiB, regularised rows {result['regularized_rows']}",
                      flush=True)
    step = {m: statistics.median(t for r in rs for t in r["step_times"]) for m, rs in results.items()}
    peak = {m: max(r["peak_bytes"] for r in rs) for m, rs in results.items()}
    summary = {"step_s": step, "peak_bytes": peak, "step_ratio": step["ba-lora"] / step["pissa"],
               "mem_ratio": peak["ba-lora"] / peak["pissa"], "device": results["pissa"][0]["device"],
               "threads": results["pissa"][0]["threads"]}
    print(f"median step: PiSSA {step['pissa']:.3f} s, BA-LoRA {step['ba-lora']:.3f} s "
          f"(device {summary['device']}, {summary['threads']} threads)")
    summary.update(batch=args.batch, seq_len=args.seq_len, r=args.r, bf16=args.bf16, model=args.model,
                   svd_eigensolver=args.svd_eigensolver or "eigh",
                   step_times={m: [t for r in rs for t in r["step_times"]] for m, rs in results.items()})
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2))
    print(f"step_ratio={summary['step_ratio']:.3f} mem_ratio={summary['mem_ratio']:.3f}")
    return summary


if __name__ == "__main__":
    main()
