"""Fine-tune a sequence classifier on a GLUE task with any method of the paper's NLU table.

    python finetune_glue.py --config configs/glue/mrpc_minilm_ba-lora.yaml --output_dir runs/x --seed 42
    python finetune_glue.py --task_name rte --model_name_or_path all-minilm-l6-v2 \
        --glue_dir data/glue --method lora --output_dir runs/rte_lora

Methods: full, bitfit, hadapter, padapter, lora, loha, dora, adalora, pissa, and ba-lora (= pissa with
the NLU regularisers; needs `regularizer_preset` iclr2026 | v5 or explicit λ). Every field of
`BALoRATrainingArguments` (HF TrainingArguments + regulariser fields) is accepted too.

Writes to --output_dir: config.yaml (resolved), run.json (provenance), metrics.json ({"final",
"best", "best_epoch", "score", "final_score", "trainable_params", "task", ...}), log_history.json,
features_step_final.npy / labels_step_final.npy (+ the same under the numeric final step, and every
`feature_dump_steps` steps when > 0), eval_dev/{metrics.json, samples.jsonl} (the final model's dev
metrics and per-item predictions, for paired comparisons), and the weights: adapter/ (peft format, with the trained task
head; + adapter_lora/, a plain LoRA on the original model, for lora / dora / pissa / ba-lora), or model/
(transformers format: the whole fine-tuned classifier for full and bitfit; for hadapter / padapter it
holds the bottleneck adapters too, loaded by `adapters.prepare_model` + `load_state_dict`).
metrics.json is written last: its presence marks a finished run, which is not replaced without
--overwrite_output_dir.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import DataCollatorWithPadding, set_seed

from balora import adapters, regularizers
from balora.cli import lifecycle
from balora.repro import features, glue, provenance
from balora.repro.config import parse_args, resolved_config
from balora.trainer import BALoRATrainer, BALoRATrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class GlueArguments:
    """Task, data and model."""

    task_name: str = field(metadata={"help": f"GLUE task: {', '.join(glue.GLUE_TASKS)}."})
    glue_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the original GLUE TSVs (<dir>/<TASK>/{train,dev}.tsv); default: nyu-mll/glue hub."
        },
    )
    model_name_or_path: str = field(
        default="all-minilm-l6-v2",
        metadata={
            "help": "Hub id, local dir, 'all-minilm-l6-v2' (embedded) or a tiny test model (tiny-bert, ...)."
        },
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N validation rows."})
    minority_class: str | None = field(
        default=None,
        metadata={
            "help": "Bias probe: make this class (name, e.g. positive, or id) a minority of the training rows "
            "(after max_train_samples), keeping a seeded 1/imbalance_ratio share of it; the dev set is unchanged."
        },
    )
    imbalance_ratio: float | None = field(
        default=None, metadata={"help": "Majority : minority ratio for --minority_class (19 = 1:19)."}
    )
    label_noise: float = field(
        default=0.0,
        metadata={
            "help": "Bias probe: flip this fraction of the training labels to another class at random (after "
            "the imbalance); the dev set stays clean."
        },
    )
    perturbation_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the minority subsample and of the label flips (default: --seed)."},
    )
    feature_dump_steps: int = field(
        default=0,
        metadata={"help": "Dump validation features every N optimizer steps (0 = only the final dump)."},
    )
    feature_batch_size: int = field(default=64, metadata={"help": "Batch size of the feature extraction."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow writing into an output dir that holds a finished run (metrics.json)."},
    )

    def __post_init__(self):
        for name in ("max_seq_length", "max_train_samples", "max_eval_samples", "feature_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.feature_dump_steps < 0:
            raise ValueError(f"--feature_dump_steps must be >= 0, got {self.feature_dump_steps}")
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"--label_noise must be in [0, 1), got {self.label_noise}")
        if (self.minority_class is None) != (self.imbalance_ratio is None):
            raise ValueError(
                "--minority_class and --imbalance_ratio go together: give both (e.g. --minority_class "
                "positive --imbalance_ratio 19) or neither"
            )
        if self.imbalance_ratio is not None and not self.imbalance_ratio > 1:
            raise ValueError(
                f"--imbalance_ratio must be > 1 (majority : minority), got {self.imbalance_ratio}"
            )


@dataclass
class GlueAdapterArguments(adapters.AdapterArguments):
    """The method flags (balora.adapters.AdapterArguments; here ba-lora and α = 8 by default) and those
    of the NLU methods: the trained task head, bottleneck adapters, AdaLoRA's budget schedule."""

    method: str = field(
        default="ba-lora", metadata={"help": f"One of {', '.join(adapters.AdapterArguments.method_choices)}."}
    )
    lora_alpha: float | None = field(
        default=8.0, metadata={"help": "α: the update is scaled by α/r (None: α = r)."}
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names to adapt; default: every attention and FFN linear of the architecture."
        },
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full (the task head); default per architecture."}
    )
    reduction_factor: int = field(
        default=16, metadata={"help": "Bottleneck adapters: hidden / bottleneck size."}
    )
    adalora_init_r: int = field(default=12, metadata={"help": "AdaLoRA initial rank."})
    adalora_tinit: float = field(
        default=0,
        metadata={
            "help": "AdaLoRA: steps before rank pruning starts; a value < 1 is a fraction of the run's optimizer "
            "steps (the configs use 0.1, so the schedule follows the data size, epochs and GPU count)."
        },
    )
    adalora_tfinal: float = field(
        default=0,
        metadata={
            "help": "AdaLoRA: final steps with a fixed budget; a value < 1 is a fraction of the optimizer steps."
        },
    )
    adalora_delta_t: int = field(default=10, metadata={"help": "AdaLoRA: steps between budget updates."})

    def __post_init__(self):
        super().__post_init__()
        if self.reduction_factor < 1:
            raise ValueError(f"--reduction_factor must be >= 1, got {self.reduction_factor}")
        if self.adalora_init_r < 1 or self.adalora_delta_t < 1:
            raise ValueError("--adalora_init_r and --adalora_delta_t must be >= 1")

    def to_config(self, model_type: str, total_steps: int) -> adapters.AdapterConfig:
        """The AdapterConfig for a `model_type` classifier trained for `total_steps` optimizer steps (the
        architecture's default target modules and task head; AdaLoRA's schedule in steps)."""
        peft = self.adapter_method in adapters.PEFT_METHODS
        return super().to_config(
            target_modules=self.target_modules or (glue.default_target_modules(model_type) if peft else None),
            modules_to_save=self.modules_to_save or glue.default_modules_to_save(model_type),
            reduction_factor=self.reduction_factor,
            adalora_init_r=self.adalora_init_r,
            adalora_tinit=_schedule_steps(self.adalora_tinit, total_steps, "adalora_tinit"),
            adalora_tfinal=_schedule_steps(self.adalora_tfinal, total_steps, "adalora_tfinal"),
            adalora_delta_t=self.adalora_delta_t,
            adalora_total_step=total_steps if self.adapter_method == "adalora" else None,
        )


METHOD_CHOICES = GlueAdapterArguments.method_choices


def _select(dataset, limit: int | None, name: str):
    if limit is None:
        return dataset
    if limit < 1:
        raise ValueError(f"{name} must be >= 1, got {limit}")
    return dataset.select(range(min(limit, len(dataset))))


def _perturb_training_set(train_raw, spec: glue.GlueTask, glue_args: GlueArguments, seed: int):
    """The bias probes' training set: minority subsample, then label flips; returns (dataset, record)."""
    record: dict[str, Any] = {}
    seed = glue_args.perturbation_seed if glue_args.perturbation_seed is not None else seed
    if glue_args.minority_class is not None:
        train_raw, record["imbalance"] = glue.subsample_class(
            train_raw, spec, glue_args.minority_class, glue_args.imbalance_ratio, seed
        )
        logger.info("imbalance: %s", record["imbalance"])
    if glue_args.label_noise:
        train_raw, record["label_noise"] = glue.flip_labels(train_raw, spec, glue_args.label_noise, seed)
        logger.info("label noise: %s", record["label_noise"])
    if record:
        record["seed"] = seed
    return train_raw, record


def _schedule_steps(value: float, total_steps: int, name: str) -> int:
    """A step count given as steps (>= 1) or as a fraction of the run's optimizer steps (< 1)."""
    if value < 0 or (value >= 1 and value != int(value)):
        raise ValueError(f"{name} must be a whole number of steps or a fraction in [0, 1), got {value}")
    if value >= 1:
        return int(value)
    # floor (a run too short for a 10% phase gets none), with a tolerance for 0.1 * 7800 = 780.0000000000001
    return math.floor(value * total_steps + 1e-9)


def _optimizer_steps(n_train: int, args: BALoRATrainingArguments) -> int:
    """Optimizer steps of the run (AdaLoRA's budget schedule needs it before the Trainer exists)."""
    if args.max_steps > 0:
        return args.max_steps
    batch = args.per_device_train_batch_size * max(1, args.world_size)
    steps_per_epoch = max(1, math.ceil(math.ceil(n_train / batch) / args.gradient_accumulation_steps))
    return max(1, math.ceil(steps_per_epoch * args.num_train_epochs))


def _save_weights(trainer: BALoRATrainer, model, tokenizer, method: str, output_dir: Path) -> dict[str, str]:
    """Save the fine-tuned weights in peft (adapter methods) or transformers format; returns {kind: dir}."""
    if method in adapters.PEFT_METHODS:
        return adapters.save_adapter(model, output_dir)
    trainer.save_model(str(output_dir / "model"))
    tokenizer.save_pretrained(output_dir / "model")
    return {"model": str(output_dir / "model")}


DEV_ITEMS_PROTOCOL = ("glue-dev", "1")


def _write_dev_items(out_dir: Path, spec: glue.GlueTask, prediction, final: dict[str, Any]) -> None:
    """eval_dev/{metrics.json, samples.jsonl}: the final model's dev metrics and one row per dev item.

    Rows: task_id (dev row index), label, prediction (class id; STS-B: score), `correct` (0/1;
    STS-B: minus the absolute error), the per-item score of the paired comparisons (balora/repro/paired.py),
    and for classification `logits` (the C class logits, for threshold-free re-analysis).
    """
    logits = (
        prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    )
    logits = np.asarray(logits)
    labels = np.asarray(prediction.label_ids).reshape(-1)
    if spec.is_regression:
        predicted = logits.reshape(-1).astype(float)
        item_scores = -np.abs(predicted - labels)
    else:
        predicted = logits.argmax(axis=-1)
        item_scores = (predicted == labels).astype(float)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        for i, (label, pred, score) in enumerate(
            zip(labels.tolist(), predicted.tolist(), item_scores.tolist(), strict=True)
        ):
            row = {"task_id": i, "label": label, "prediction": pred, "correct": score}
            if not spec.is_regression:
                row["logits"] = [float(v) for v in logits[i]]  # full precision: ties decide AUROCs
            f.write(json.dumps(row) + "\n")
    provenance.write_json(
        out_dir / "metrics.json",
        {
            "benchmark": f"glue-{spec.name}-dev",
            "protocol": DEV_ITEMS_PROTOCOL[0],
            "protocol_version": DEV_ITEMS_PROTOCOL[1],
            "n": len(labels),
            "score": final["score"],
            **{
                k: v
                for k, v in final.items()
                if k not in ("score", "runtime", "samples_per_second", "steps_per_second")
            },
        },
    )


def _epoch_metrics(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation entries of the Trainer log, with the "eval_" prefix removed."""
    rows = []
    for entry in log_history:
        if "eval_score" in entry:
            row = {k[len("eval_") :]: v for k, v in entry.items() if k.startswith("eval_")}
            row["epoch"], row["step"] = entry.get("epoch"), entry.get("step")
            rows.append(row)
    return rows


def _warn_constant_terms(args: BALoRATrainingArguments, num_labels: int, task: str) -> list[str]:
    """Warn for regularisers that are constant on a C-column output (docs/method.md §3)."""
    active = [t for t in regularizers.TERMS if getattr(args, f"lambda_{t}") > 0]
    constant = [t for t in regularizers.constant_terms(args.regularizer_config(), num_labels) if t in active]
    if constant:
        warnings.warn(
            f"{task}: the {', '.join(constant)} term(s) are constant on a {num_labels}-column output "
            f"(zero gradient, they only shift the loss); see docs/nlu.md",
            regularizers.ConstantTermWarning,
            stacklevel=2,
        )
    return constant


# The dataclasses parsed from --config + flags (tests parse every config in configs/ with them).
ARGUMENT_CLASSES = (GlueArguments, GlueAdapterArguments, BALoRATrainingArguments)


def main(argv: list[str] | None = None, description: str | None = __doc__) -> dict[str, Any] | None:
    """Fine-tune and evaluate; returns the metrics.json payload (None on ranks other than 0).

    `description` is the `--help` text (a command built on this one passes its own).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # The NLU regulariser forms act on (B, C) logits: the task is fixed, before the preset is resolved.
    glue_args, adapter_args, args = parse_args(
        ARGUMENT_CLASSES, ["--regularizer_task", "nlu", *argv], description=description
    )
    if args.regularizer_task != "nlu":
        raise ValueError("finetune_glue.py trains with regularizer_task=nlu; do not override it")
    spec = glue.get_task(glue_args.task_name)
    if args.metric_for_best_model:
        glue.validate_metric(spec, args.metric_for_best_model)
    what_runs = lifecycle.resolve_method(adapter_args.method, args)
    method = what_runs["adapter_method"]
    lifecycle.warn_if_regularizers_with_full_ft(method, args)
    if args.label_names is None:
        args.label_names = ["labels"]
    if args.resume_from_checkpoint:
        # Trainer would accept the flag and then train from scratch without a word: refuse it instead.
        raise ValueError(
            f"--resume_from_checkpoint {args.resume_from_checkpoint}: finetune_glue.py does not resume (its "
            "runs last minutes to a few hours and save no optimizer checkpoints). Start the run again, with "
            "--overwrite_output_dir if its folder holds a finished run; the sweep scripts skip finished runs."
        )
    lifecycle.check_training_arguments(args)
    # No checkpoints to resume: the loss need not be logged at the checkpoint steps.
    run = lifecycle.Run(
        args.output_dir,
        resolved_config(glue_args, adapter_args, args),
        overwrite=glue_args.overwrite_output_dir,
        log_at_checkpoints=False,
    )
    output_dir = run.output_dir
    logging.basicConfig(level=logging.INFO if args.should_log else logging.WARNING)

    set_seed(args.seed)  # seed first: head init and randomised PiSSA draw from the global RNG
    train_raw = _select(
        glue.load_glue_split(spec, "train", glue_args.glue_dir),
        glue_args.max_train_samples,
        "max_train_samples",
    )
    eval_raw = _select(
        glue.load_glue_split(spec, "validation", glue_args.glue_dir),
        glue_args.max_eval_samples,
        "max_eval_samples",
    )
    train_raw, perturbation = _perturb_training_set(train_raw, spec, glue_args, args.seed)
    with lifecycle.loading_model(glue_args.model_name_or_path):
        model, tokenizer = glue.load_classifier(glue_args.model_name_or_path, spec, seed=args.seed)
    keep = [*glue.model_input_columns(model.config), "labels"]
    train_ds, eval_ds = (
        glue.tokenize_dataset(ds, tokenizer, glue_args.max_seq_length).select_columns(keep)
        for ds in (train_raw, eval_raw)
    )

    model_type = model.config.model_type
    total_steps = _optimizer_steps(len(train_ds), args)
    adapter_cfg = adapter_args.to_config(model_type, total_steps)
    model = adapters.prepare_model(model, adapter_cfg)
    trainable = adapters.count_trainable_parameters(model)
    constant_terms = _warn_constant_terms(args, spec.num_labels, spec.name)
    logger.info("%s on %s: %d trainable parameters", adapter_args.method, spec.name, trainable)

    collator = DataCollatorWithPadding(tokenizer)
    callbacks = []
    if glue_args.feature_dump_steps:
        callbacks.append(
            features.FeatureDumpCallback(
                eval_ds, collator, output_dir, glue_args.feature_dump_steps, glue_args.feature_batch_size
            )
        )
    trainer = BALoRATrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[*callbacks, *run.callbacks(model)],
        compute_metrics=lambda pred: glue.compute_metrics(spec, pred.predictions, pred.label_ids),
        # Encoder-decoder heads (T5) also return encoder states; keep only the (B, C) logits for the metrics.
        preprocess_logits_for_metrics=lambda logits, labels: (
            logits[0] if isinstance(logits, tuple) else logits
        ),
    )
    train_result = trainer.train()
    epochs = _epoch_metrics(trainer.state.log_history)
    if not epochs or epochs[-1]["step"] != trainer.state.global_step:
        # No per-epoch evaluation (eval_strategy "no") or the run stopped mid-epoch: score the final model.
        trainer.evaluate()
        epochs = _epoch_metrics(trainer.state.log_history)
    best = max(epochs, key=lambda row: row["score"])
    final = epochs[-1]

    step = trainer.state.global_step
    # Per-item predictions of the final model on the dev set (every rank takes part in the gather).
    dev_predictions = trainer.predict(eval_ds)
    if not trainer.is_world_process_zero():
        # Every rank holds the same gathered metrics; one writer, or concurrent writes of one file race
        # on its temporary name.
        lifecycle.finish_distributed(trainer)
        return None
    features.dump_features(model, eval_ds, collator, output_dir, "final", glue_args.feature_batch_size)
    for kind in ("features", "labels"):
        np.save(output_dir / f"{kind}_step_{step}.npy", np.load(output_dir / f"{kind}_step_final.npy"))

    metrics = {
        "task": spec.name,
        "headline_metric": spec.headline,
        "score": best["score"],
        "final_score": final["score"],
        "best_epoch": best["epoch"],
        "best": best,
        "final": final,
        "epochs": epochs,
        "trainable_params": trainable,
        **what_runs,
        "model": glue_args.model_name_or_path,
        "train_samples": len(train_ds),
        "eval_samples": len(eval_ds),
        "train_loss": train_result.training_loss,
        "global_step": step,
        "constant_regularizer_terms": constant_terms,
        "train_perturbation": perturbation,
    }
    if not spec.is_regression:
        metrics["majority_class_score"] = glue.majority_class_score(spec, eval_ds["labels"])
    metrics["weights"] = _save_weights(trainer, model, tokenizer, method, output_dir)
    _write_dev_items(output_dir / "eval_dev", spec, dev_predictions, final)
    run.finish(
        trainer,
        metrics,
        args.seed,
        extra={
            "task": spec.name,
            "model": glue_args.model_name_or_path,
            "method": adapter_args.method,
            "glue_dir": glue_args.glue_dir,
            "data_source": "tsv" if glue_args.glue_dir else "hub:nyu-mll/glue",
            "world_size": args.world_size,
        },
    )
    logger.info(
        "%s %s: best %s = %.2f at epoch %s, final %.2f",
        spec.name,
        adapter_args.method,
        spec.headline,
        best["score"],
        best["epoch"],
        final["score"],
    )
    lifecycle.finish_distributed(trainer)
    return metrics


def cli(argv: list[str] | None = None) -> int:
    """Console entry point `balora-finetune-glue`: the command line below, returning the exit status."""
    return lifecycle.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
