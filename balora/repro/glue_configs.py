"""Write the flat GLUE configs of configs/glue/ (run once after editing; the YAML files are committed).

    python -m balora.repro.studies --write-configs     # rewrite configs/glue/*.yaml (this module's main)
    python -m balora.repro.studies --check             # exit 1, naming them, if committed files differ
    python scripts/generate_glue_configs.py [--check] [--out_dir DIR]   # the same, this module only

Grids: the paper's NLU table on DeBERTa-v3-base (8 tasks x 10 methods), the v2 NLU table on RoBERTa-large
(8 tasks x 10 methods, LoRA's RoBERTa-large recipe), the GLUE / t-SNE runs on
BERT-large and GPT-2-XL (8 tasks x LoRA, BA-LoRA), the noisy-pretraining probe on RoBERTa-base and T5-base
(4 tasks x PiSSA, BA-LoRA), and the CPU mini table on all-MiniLM-L6-v2 (5 tasks x 10 methods).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

# The YAML files it writes (configs stay data; the study registry, balora/repro/studies.py, runs them).
HERE = Path(__file__).resolve().parents[2] / "configs" / "glue"
METHODS = ("full", "bitfit", "hadapter", "padapter", "lora", "loha", "dora", "adalora", "pissa", "ba-lora")
METHOD_NAMES = {
    "full": "Full FT",
    "bitfit": "BitFit",
    "hadapter": "Houlsby adapter (HAdapter)",
    "padapter": "Pfeiffer adapter (PAdapter)",
    "lora": "LoRA",
    "loha": "LoHa",
    "dora": "DoRA",
    "adalora": "AdaLoRA",
    "pissa": "PiSSA",
    "ba-lora": "BA-LoRA (PiSSA + ICLR-2026 NLU regularisers)",
}
LORA_FAMILY = ("lora", "loha", "dora", "adalora", "pissa", "ba-lora")

# DeBERTa-v3-base, the paper's main NLU table. Reported (docs/method.md §4): MNLI 5 epochs bs 16 lr 5e-5;
# SST-2 and MRPC 20 epochs; RTE 50 epochs bs 16 lr 1e-4; r = 8; lr grid {5e-5 ... 6e-4}. Not reported,
# taken from AdaLoRA's DeBERTa-v3-base scripts (ADALORA_SCRIPTS): CoLA 25, QNLI 5, QQP 5, STS-B 25 epochs and
# every sequence length (SST-2 128).
DEBERTA_TASKS = {
    #        epochs, batch, LoRA-family lr, max_seq_length, source note
    "mnli": (5, 16, 5e-5, 256, "reported"),
    "sst2": (20, 32, 1e-4, 128, "epochs reported; bs/lr: our choice from the paper's grid"),
    "mrpc": (20, 32, 1e-4, 320, "epochs reported; bs/lr: our choice from the paper's grid"),
    "cola": (25, 32, 1e-4, 64, "not reported: AdaLoRA's epochs, lr from the paper's grid"),
    "qnli": (5, 32, 1e-4, 512, "not reported: AdaLoRA's epochs, lr from the paper's grid"),
    "qqp": (5, 32, 1e-4, 320, "not reported: AdaLoRA's epochs, lr from the paper's grid"),
    "rte": (50, 16, 1e-4, 320, "reported"),
    "stsb": (25, 32, 1e-4, 128, "not reported: AdaLoRA's epochs, lr from the paper's grid"),
}
# AdaLoRA trains at the learning rates of its own GLUE scripts, not at the LoRA family's: its singular
# values start at 0, and at LoRA's 1e-4 it would be a baseline trained at the wrong lr (see MINILM_LR below).
ADALORA_SCRIPTS = "github.com/QingruZhang/AdaLoRA NLU/scripts/run_debertav3_<task>.sh @ d10f5ebe"
ADALORA_LR = {
    "mnli": 5e-4,
    "sst2": 8e-4,
    "mrpc": 1e-3,
    "cola": 8e-4,
    "qnli": 5e-4,
    "qqp": 8e-4,
    "rte": 1.2e-3,
    "stsb": 2.2e-3,
}
# Learning rates of the non-LoRA baselines (not reported in the paper; usual values for these methods).
OTHER_LR = {"full": 2e-5, "bitfit": 1e-3, "hadapter": 5e-4, "padapter": 5e-4}

# CPU mini table on all-MiniLM-L6-v2 (22.7M) with the real TSVs in data/glue (the data folder, $BALORA_DATA_DIR,
# filled by scripts/fetch_data.py; scripts/mini.sh passes --glue_dir from it); sized so the 111
# NLU runs of scripts/mini.sh take ~4.5 h on 2 cores (measured LoRA step, batch 32, 2 threads: 2.2 s at
# 128 tokens (RTE), ~0.5-0.7 s on the short-sentence tasks). Training rows are the first N of each file.
MINILM_TASKS = {
    #        epochs, max_train_samples
    "rte": (2, 1200),  # first 1,200 of 2,490 rows: 38 steps/epoch
    "mrpc": (2, 1600),  # first 1,600 of 3,668 rows: 50 steps/epoch
    "sst2": (1, 4000),  # first 4,000 of 67,349 rows: 125 steps
    "cola": (2, 3000),  # first 3,000 of 8,551 rows: 94 steps/epoch
    "stsb": (2, 2000),  # first 2,000 of 5,749 rows: 63 steps/epoch
}
# AdaLoRA's singular values E start at 0, so its first updates are products of three small factors: at
# 5e-4 it stayed at chance on SST-2 after 125 steps (50.9%); at 3e-3 it reached 81.8% (seed 42).
# PiSSA / BA-LoRA take LoRA's 5e-4. Probe on STS-B, PiSSA seed 42 (Pearson after 2 epochs): 2e-4 13.7,
# 5e-4 31.5, 1e-3 22.2; 2e-4 (the first choice) handicapped them against LoRA.
MINILM_LR = {
    "full": 5e-5,
    "bitfit": 1e-3,
    "hadapter": 1e-3,
    "padapter": 1e-3,
    "lora": 5e-4,
    "loha": 5e-4,
    "dora": 5e-4,
    "adalora": 3e-3,
    "pissa": 5e-4,
    "ba-lora": 5e-4,
}
MINILM_ROWS = {"rte": 2490, "mrpc": 3668, "sst2": 67349, "cola": 8551, "stsb": 5749}


def _method_fields(method: str, r: int, alpha: float, total_steps: int) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = [("method", method)]
    if method in LORA_FAMILY:
        # PiSSA / BA-LoRA: alpha = r (scaling 1), the paper's PiSSA setting.
        out += [
            ("lora_r", r),
            ("lora_alpha", float(r) if method in ("pissa", "ba-lora") else alpha),
            ("lora_dropout", 0.0),
        ]
    if method == "adalora":
        # Budget schedule: prune after the first 10% of the run's optimizer steps, fixed for the last 20%
        # (AdaLoRA-style), as fractions: the steps follow the data size, epochs and number of GPUs.
        out += [
            ("adalora_init_r", 12),
            ("adalora_tinit", 0.1),
            ("adalora_tfinal", 0.2),
            ("adalora_delta_t", 10),
        ]
    if method in ("hadapter", "padapter"):
        out += [("reduction_factor", 16)]
    if method == "ba-lora":
        out += [("regularizer_preset", "iclr2026")]
    return out


def _launch(name: str) -> str:
    """The header line that launches one config's seed-42 run."""
    return (
        f"Launch: python finetune_glue.py --config configs/glue/{name} --output_dir runs/glue/"
        f"{name[:-5]}/seed42 --seed 42"
    )


def _training_fields(
    epochs: int,
    batch: int,
    lr: float,
    weight_decay: float | None,
    logging_steps: int = 50,
    report_to: str = "tensorboard",
) -> list[tuple[str, object]]:
    """The schedule and logging fields every grid ends with (weight_decay None: the field is left out)."""
    out: list[tuple[str, object]] = [
        ("num_train_epochs", float(epochs)),
        ("per_device_train_batch_size", batch),
        ("per_device_eval_batch_size", 64),
        ("learning_rate", lr),
        ("lr_scheduler_type", "linear"),
        ("warmup_steps", 0.06),
    ]
    if weight_decay is not None:
        out.append(("weight_decay", weight_decay))
    out += [
        ("eval_strategy", "epoch"),
        ("save_strategy", "no"),
        ("logging_steps", logging_steps),
        ("report_to", report_to),
    ]
    return out


def _yaml_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        # Quote what YAML 1.1 would read as something else (`no` is the boolean false).
        return yaml.safe_dump(value).removesuffix("\n").removesuffix("\n...")
    return str(value)


# File name -> YAML text, filled by the grid functions below; nothing touches the disk until main().
_RENDERED: dict[str, str] = {}


def _write(name: str, header: list[str], fields: list[tuple[str, object]]) -> None:
    lines = [f"# {line}" if line else "#" for line in header]
    lines += [f"{key}: {_yaml_value(value)}" for key, value in fields]
    _RENDERED[name] = "\n".join(lines) + "\n"


def render_all() -> dict[str, str]:
    """Every generated config, as file name -> YAML text."""
    _RENDERED.clear()
    deberta(), roberta_large(), tsne_runs(), probe_runs(), minilm()
    return dict(_RENDERED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out_dir", type=Path, default=HERE, help="where to write (default: configs/glue)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file in --out_dir differs"
    )
    args = parser.parse_args(argv)
    rendered = render_all()
    if args.check:
        stale = [
            name
            for name, text in rendered.items()
            if not (args.out_dir / name).is_file() or (args.out_dir / name).read_text() != text
        ]
        if stale:
            print(f"{len(stale)} of {len(rendered)} configs differ from the generator: {', '.join(stale)}")
            print("run: python -m balora.repro.studies --write-configs")
            return 1
        print(f"all {len(rendered)} generated configs in {args.out_dir} are up to date")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.out_dir / name).write_text(text)
    print(f"wrote {len(rendered)} configs to {args.out_dir}")
    return 0


def deberta() -> int:
    count = 0
    for task, (epochs, batch, lora_lr, seq, note) in DEBERTA_TASKS.items():
        rows = {
            "mnli": 392702,
            "sst2": 67349,
            "mrpc": 3668,
            "cola": 8551,
            "qnli": 104743,
            "qqp": 363846,
            "rte": 2490,
            "stsb": 5749,
        }[task]
        total = epochs * -(-rows // batch)
        for method in METHODS:
            name = f"{task}_deberta-v3-base_{method}.yaml"
            lr = lora_lr if method in LORA_FAMILY else OTHER_LR[method]
            if method == "adalora":
                lr = ADALORA_LR[task]
                note_method = f"; lr {lr}: AdaLoRA's own script ({ADALORA_SCRIPTS.replace('<task>', task)})"
            else:
                note_method = ""
            header = [
                f"Paper NLU table (DeBERTa-v3-base): {METHOD_NAMES[method]} on GLUE {task.upper()}, "
                f"validation {'matched ' if task == 'mnli' else ''}set, best epoch; seeds 42/1024/2024.",
                f"Hyperparameters: {note}{note_method}.",
                _launch(name),
                "Data: nyu-mll/glue from the hub; add --glue_dir DIR for the original TSV files.",
            ]
            fields = [
                ("task_name", task),
                ("model_name_or_path", "microsoft/deberta-v3-base"),
                ("max_seq_length", seq),
                *_method_fields(method, 8, 8.0, total),
                *_training_fields(epochs, batch, lr, 0.01),
            ]
            _write(name, header, fields)
            count += 1
    return count


# RoBERTa-large, the main NLU table of the paper's v2: LoRA's own RoBERTa-large GLUE recipe (LORA_SCRIPTS):
# r = 8, alpha = 16 on query and value, per task the epochs, lr and length of its script, warmup ratio 0.06,
# weight decay 0.1, linear schedule. Its batch is 4 (SST-2, RTE: 8) per GPU on 8 GPUs; here the same
# effective batch (32 / 64) in one process. Its MRPC, RTE and STS-B runs start from its MNLI adapter
# (--lora_path); here every run starts from the pre-trained model, as the other methods do.
LORA_SCRIPTS = "github.com/microsoft/LoRA examples/NLU/roberta_large_<task>.sh @ c18b175e"
ROBERTA_LARGE_TASKS = {
    #        epochs, batch (8 GPUs x per-GPU), lr, max_seq_length
    "mnli": (10, 32, 3e-4, 128),
    "sst2": (10, 64, 4e-4, 512),
    "mrpc": (20, 32, 3e-4, 512),
    "cola": (20, 32, 3e-4, 128),
    "qnli": (10, 32, 2e-4, 512),
    "qqp": (20, 32, 3e-4, 512),
    "rte": (20, 64, 4e-4, 512),
    "stsb": (10, 32, 3e-4, 128),
}
# Not in LoRA's scripts: AdaLoRA takes its own per-task lr (ADALORA_LR); the bottleneck adapters LoRA's
# RoBERTa-large adapter scripts' 3e-4 (adapter_houlsby/pfeiffer_roberta_large_mnli.sh, the same commit);
# full FT and BitFit the values of OTHER_LR.
ROBERTA_LARGE_OTHER_LR = {"full": 2e-5, "bitfit": 1e-3, "hadapter": 3e-4, "padapter": 3e-4}


def roberta_large() -> int:
    """RoBERTa-large, the ten methods on the eight GLUE tasks with LoRA's RoBERTa-large recipe."""
    count = 0
    for task, (epochs, batch, lora_lr, seq) in ROBERTA_LARGE_TASKS.items():
        for method in METHODS:
            name = f"{task}_roberta-large_{method}.yaml"
            if method == "adalora":
                lr, source = ADALORA_LR[task], f"AdaLoRA's lr ({ADALORA_SCRIPTS.replace('<task>', task)})"
            elif method in LORA_FAMILY:
                lr, source = lora_lr, "LoRA's lr"
            else:
                lr, source = ROBERTA_LARGE_OTHER_LR[method], "lr: not in LoRA's scripts (our choice)"
            header = [
                f"Paper NLU table (v2, RoBERTa-large): {METHOD_NAMES[method]} on GLUE {task.upper()}, "
                f"validation {'matched ' if task == 'mnli' else ''}set, best epoch; seeds 42/1024/2024.",
                f"Hyperparameters: LoRA's RoBERTa-large recipe ({LORA_SCRIPTS.replace('<task>', task)}): "
                f"{epochs} epochs, {seq} tokens, batch {batch // 8} x 8 GPUs; {source}.",
                _launch(name),
                "Data: nyu-mll/glue from the hub; add --glue_dir DIR for the original TSV files.",
            ]
            fields = [
                ("task_name", task),
                ("model_name_or_path", "FacebookAI/roberta-large"),
                ("max_seq_length", seq),
                *_method_fields(method, 8, 16.0, 0),
            ]
            if method in LORA_FAMILY:
                fields.append(("target_modules", ["query", "value"]))
            fields += _training_fields(epochs, batch, lr, 0.1)
            _write(name, header, fields)
            count += 1
    return count


# BERT-large and GPT-2-XL, LoRA vs BA-LoRA on all eight GLUE tasks (the paper's GLUE / GLUE-X runs, whose
# MNLI features also make the t-SNE figure). Reported: r = 8, α = 16; LoRA lr 2e-4 ... 5e-4; 20 epochs on
# the small GLUE tasks, 5 on the large ones; batch 16 for GPT-2-XL. "Large" = the four tasks with more than
# 50K training rows (MNLI, QQP, QNLI, SST-2); the paper does not list which tasks it counts as large.
# Not reported (our choice): BERT-large's batch (32), the lr (2e-4, the low end of the range), 128 tokens,
# linear schedule with 6% warmup, no weight decay.
LARGE_MODELS = {
    "bert-large": ("google-bert/bert-large-uncased", 32),
    "gpt2-xl": ("openai-community/gpt2-xl", 16),
}
LARGE_TASK_EPOCHS = {"mnli": 5, "qqp": 5, "qnli": 5, "sst2": 5, "cola": 20, "mrpc": 20, "rte": 20, "stsb": 20}


def tsne_runs() -> int:
    """BERT-large and GPT-2-XL, LoRA vs BA-LoRA (r=8, alpha=16) on the eight GLUE tasks."""
    count = 0
    for model, (hub, batch) in LARGE_MODELS.items():
        for task, epochs in LARGE_TASK_EPOCHS.items():
            for method in ("lora", "ba-lora"):
                name = f"{task}_{model}_{method}.yaml"
                size = "large" if epochs == 5 else "small"
                header = [
                    f"Paper GLUE / GLUE-X runs (and, on MNLI, the t-SNE figure): {model} {METHOD_NAMES[method]} on "
                    f"{task.upper()}, r=8, alpha=16.",
                    f"Hyperparameters: r, alpha, {epochs} epochs ({size} GLUE task)"
                    + (", batch 16" if model == "gpt2-xl" else "")
                    + " and the LoRA lr range (2e-4 ... 5e-4) "
                    "reported; " + ("batch 32, " if model == "bert-large" else "") + "lr 2e-4, 128 tokens, "
                    "warmup our choice.",
                    _launch(name),
                ]
                fields = [
                    ("task_name", task),
                    ("model_name_or_path", hub),
                    ("max_seq_length", 128),
                    ("method", method),
                    ("lora_r", 8),
                    ("lora_alpha", 16.0),
                    ("lora_dropout", 0.0),
                ]
                if method == "ba-lora":
                    fields.append(("regularizer_preset", "iclr2026"))
                fields += _training_fields(epochs, batch, 2e-4, None)
                _write(name, header, fields)
                count += 1
    return count


# Noisy-pretraining probe (v6 §3.2.2): PiSSA vs BA-LoRA on RoBERTa-base (~160 GB curated pre-training
# text) and T5-base (~750 GB C4). The paper reports CoLA, MRPC and an average over "the GLUE subset used",
# without naming the subset or the hyperparameters. Ours: CoLA, MRPC, RTE, STS-B with the DeBERTa-v3-base
# recipe of each task (r = α = 8, epochs / batch / lr / length of DEBERTA_TASKS) and the ICLR-2026 NLU preset.
PROBE_MODELS = {"roberta-base": "FacebookAI/roberta-base", "t5-base": "google-t5/t5-base"}
PROBE_TASKS = ("cola", "mrpc", "rte", "stsb")


def probe_runs() -> int:
    """RoBERTa-base and T5-base, PiSSA vs BA-LoRA, for the noisy-pretraining probe."""
    count = 0
    for model, hub in PROBE_MODELS.items():
        for task in PROBE_TASKS:
            epochs, batch, lr, seq, _ = DEBERTA_TASKS[task]
            rows = {"cola": 8551, "mrpc": 3668, "rte": 2490, "stsb": 5749}[task]
            for method in ("pissa", "ba-lora"):
                name = f"{task}_{model}_{method}.yaml"
                header = [
                    f"Paper noisy-pretraining probe (v6 §3.2.2): {model} {METHOD_NAMES[method]} on GLUE "
                    f"{task.upper()}, validation set, best epoch; seeds 42/1024/2024.",
                    "Hyperparameters: not reported for this probe; the DeBERTa-v3-base recipe of the task "
                    "(configs/glue/*_deberta-v3-base_*) is our choice, as is the task subset.",
                    _launch(name),
                ]
                fields = [
                    ("task_name", task),
                    ("model_name_or_path", hub),
                    ("max_seq_length", seq),
                    *_method_fields(method, 8, 8.0, epochs * -(-rows // batch)),
                    *_training_fields(epochs, batch, lr, 0.01),
                ]
                _write(name, header, fields)
                count += 1
    return count


def minilm() -> int:
    count = 0
    for task, (epochs, max_train) in MINILM_TASKS.items():
        rows = min(MINILM_ROWS[task], max_train or MINILM_ROWS[task])
        total = epochs * -(-rows // 32)
        for method in METHODS:
            name = f"{task}_minilm_{method}.yaml"
            header = [
                f"CPU mini table: {METHOD_NAMES[method]} on GLUE {task.upper()} with all-MiniLM-L6-v2 "
                "(22.7M, embedded), real GLUE TSVs from data/glue (scripts/fetch_data.py); not a paper number.",
                _launch(name),
            ]
            fields = [
                ("task_name", task),
                ("glue_dir", "data/glue"),
                ("model_name_or_path", "all-minilm-l6-v2"),
                ("max_seq_length", 128),
            ]
            if max_train:
                fields.append(("max_train_samples", max_train))
            fields += [
                *_method_fields(method, 8, 16.0, total),
                *_training_fields(epochs, 32, MINILM_LR[method], 0.0, logging_steps=10, report_to="none"),
            ]
            _write(name, header, fields)
            count += 1
    return count


if __name__ == "__main__":
    sys.exit(main())
