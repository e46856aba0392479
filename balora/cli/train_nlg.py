"""BA-LoRA (or LoRA / PiSSA / full FT) fine-tuning of causal LMs on instruction data (docs/method.md §4).

    python train_nlg.py --config configs/nlg/llama2-7b_metamath_ba-lora.yaml --output_dir out/x --seed 42
    python train_nlg.py --config configs/tiny/nlg.yaml --output_dir /tmp/tiny      # CPU, seconds

The output directory receives: config.yaml (resolved), run.json (provenance), metrics.json (written
last: its presence marks a finished run), log_history.json (per-step task loss and regulariser terms),
adapter/ (+ adapter_lora/, the PiSSA adapter converted to a plain LoRA on the original model), or
merged/ (full FT, or --save_merged).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed

from balora import adapters
from balora.repro import data, models, provenance, rehearsal
from balora.repro.config import changed_keys, load_yaml_config, parse_args, resolved_config, save_config
from balora.trainer import (
    BALoRATrainer,
    BALoRATrainingArguments,
    exit_launched_process,
    finish_distributed,
    resolve_method,
    warn_if_regularizers_with_full_ft,
)

logger = logging.getLogger("train_nlg")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="tiny-llama",
        metadata={
            "help": "Hub id or path (meta-llama/Llama-2-7b-hf, ...), or an embedded model: "
            "tiny-llama | tiny-mistral | tiny-gemma | smollm2-135m-instruct."
        },
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={"help": "sdpa | eager | flash_attention_2 (only when flash-attn is installed)."},
    )
    model_dtype: str = field(
        default="auto",
        metadata={"help": "auto (bfloat16 with --bf16, else float32) | float32 | bfloat16 | float16."},
    )


@dataclass
class DataArguments:
    data_path: str = field(
        default=data.EMBEDDED_ARITHMETIC,
        metadata={
            "help": "Hub id (meta-math/MetaMathQA, fxmeng/pissa-dataset), local .json/.jsonl, or embedded:arithmetic."
        },
    )
    data_subset: str | None = field(
        default=None,
        metadata={
            "help": "Hub sub-task directory, e.g. metamath | python | conversation for fxmeng/pissa-dataset."
        },
    )
    data_split: str = field(default="train", metadata={"help": "Split with slicing, e.g. train[:100000]."})
    query_field: str = field(default="query", metadata={"help": "Field holding the instruction."})
    response_field: str = field(default="response", metadata={"help": "Field holding the response."})
    max_length: int = field(default=512, metadata={"help": "Truncate prompt+response to this many tokens."})
    gsm8k_to_metamath: bool = field(
        default=False,
        metadata={"help": "Rewrite GSM8K '#### N' answer endings to 'The answer is: N' (MetaMathQA format)."},
    )
    num_embedded_rows: int = field(default=2000, metadata={"help": "Rows generated for embedded:arithmetic."})


@dataclass
class AdapterArguments:
    method: str = field(
        default="pissa",
        metadata={
            "help": "full | lora | pissa | ba-lora: the adapter and its init (ba-lora = PiSSA init with the "
            "regularizer_preset's terms). The λs alone switch the regularisers on, for any method "
            "(metrics.json 'trained' records what ran: ba-lora, pissa, lora+reg, ...)."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "Adapter rank r."})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: = r, scaling 1)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Adapter dropout (paper: 0)."})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt (default: q,k,v,o,gate,up,down _proj)."}
    )
    pissa_niter: int | None = field(
        default=None,
        metadata={
            "help": "None: exact SVD; N: randomised SVD with N subspace iterations (peft pissa_niter_N)."
        },
    )
    init_dir: str | None = field(
        default=None,
        metadata={
            "help": "PiSSA: directory of a saved decomposition (residual model + initial adapter), created "
            "on first use and reused by later runs and seeds. Required under ZeRO-3."
        },
    )
    init_only: bool = field(
        default=False, metadata={"help": "Only write the PiSSA decomposition to --init_dir and exit."}
    )
    save_merged: bool = field(
        default=False, metadata={"help": "Also save the merged model to <output_dir>/merged."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow writing into an output dir that holds a finished run (metrics.json)."},
    )


# The dataclasses parsed from --config + flags (tests parse every config in configs/ with them).
ARGUMENT_CLASSES = (ModelArguments, DataArguments, AdapterArguments, BALoRATrainingArguments)


def _check_output_dir(output_dir: Path, overwrite: bool, resume: str | None) -> None:
    """Refuse to replace a finished run (metrics.json) unless asked, and to resume one at all; the folder
    must be writable."""
    if overwrite and resume:
        raise ValueError(
            "--overwrite_output_dir starts the run afresh, --resume_from_checkpoint continues it: "
            "pass only one of them"
        )
    if (output_dir / "metrics.json").exists() and not overwrite:
        if resume:
            raise FileExistsError(
                f"{output_dir} holds a finished run (metrics.json): there is nothing to resume. Pass "
                f"--overwrite_output_dir (without --resume_from_checkpoint) to train it again, or choose "
                f"another --output_dir."
            )
        raise FileExistsError(
            f"{output_dir} holds a finished run (metrics.json). Pass --overwrite_output_dir to replace it, "
            f"or choose another --output_dir."
        )
    provenance.ensure_writable(output_dir)


# Keys of the resolved config that may differ between a run and its resume: where it is written and how
# it is reported, not what is trained.
RESUME_MAY_DIFFER = (
    "output_dir",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "logging_dir",
    "run_name",
    "report_to",
    "disable_tqdm",
    "save_total_limit",
    "dataloader_num_workers",
)


def _resolve_resume(output_dir: Path, resume: str | None, config: dict) -> str | None:
    """The checkpoint to resume from, after checking it continues the same run.

    'last' / 'auto' / 'true' take the newest complete checkpoint-* of output_dir (a save killed part-way
    leaves an incomplete one, which is skipped); a path is used as given. The resolved config must equal
    the one the run started with (config.yaml beside the checkpoint), except RESUME_MAY_DIFFER: the
    checkpoint's optimizer and learning-rate schedule continue the saved settings, whatever the flags say.
    """
    if not resume:
        return None
    if resume.lower() in ("last", "auto", "true"):
        checkpoint = provenance.last_complete_checkpoint(output_dir)
        if checkpoint is None:
            incomplete = [p.name for p in provenance.checkpoints(output_dir)]
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume}: no complete checkpoint-* in {output_dir}"
                + (f" (incomplete: {incomplete})" if incomplete else "")
            )
    else:
        checkpoint = Path(resume)
        if not provenance.checkpoint_is_complete(checkpoint):
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume}: not a complete checkpoint "
                f"(no readable trainer_state.json, or an empty file)"
            )
    saved_path = checkpoint.parent / "config.yaml"
    if not saved_path.is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume}: {saved_path} is missing, so the settings of "
            f"the run to resume cannot be checked"
        )
    changed = changed_keys(load_yaml_config(saved_path), config, RESUME_MAY_DIFFER)
    if changed:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ValueError(
            f"--resume_from_checkpoint {resume}: the config differs from the run's {saved_path} "
            f"({listed}). A resume continues the checkpoint's optimizer and schedule: resume with "
            f"the same settings, or start a new run (another --output_dir, or "
            f"--overwrite_output_dir)."
        )
    return str(checkpoint)


def _start_run_dir(output_dir: Path, config: dict) -> None:
    """Write config.yaml now, unless the folder holds a finished run being replaced (--overwrite_output_dir):
    that one stays intact until training starts (_RunFolder), so a bad input found before loses nothing."""
    if not (output_dir / "metrics.json").exists():
        save_config(output_dir / "config.yaml", config)


class _RunFolder(TrainerCallback):
    """The run folder during training.

    At the start, a run that does not resume removes the metrics and checkpoints of the run it replaces
    (so that neither marks it finished nor is picked by a later `--resume_from_checkpoint last`) and
    writes its config.yaml. At every checkpoint step the loss is logged before the save, so that a
    checkpoint's log history covers every step up to it: the whole-run train_loss of a resumed run is
    computed from it.
    """

    def __init__(self, output_dir: Path, config: dict, resume: str | None):
        self.output_dir, self.config, self.resume = output_dir, config, resume

    def on_train_begin(self, args, state, control, **kwargs):
        if not args.should_save:
            return
        if not self.resume:
            stale = [
                p
                for p in (self.output_dir / "metrics.json", self.output_dir / "log_history.json")
                if p.exists()
            ]
            stale += provenance.checkpoints(self.output_dir)
            if stale:
                logger.warning(
                    "Replacing the earlier run in %s: removing %s", self.output_dir, [p.name for p in stale]
                )
            for path in stale:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        save_config(self.output_dir / "config.yaml", self.config)

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True
        return control

    on_epoch_end = on_step_end  # save_strategy "epoch" decides to save here


def _train_loss_over_run(
    log_history: list[dict], resumed_at: int, loss_since: float, global_step: int
) -> float:
    """Mean training loss over all `global_step` steps of a run resumed at step `resumed_at`.

    Args:
        log_history: the Trainer's log (restored from the checkpoint, then continued).
        resumed_at: global step of the checkpoint the run resumed from (0: not resumed).
        loss_since: the Trainer's train_loss: the mean over the steps after `resumed_at` only.
        global_step: the last step.
    """
    if resumed_at == 0:
        return loss_since
    # Each "loss" entry is the mean over the steps since the previous one.
    total, previous = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry["step"] <= resumed_at:
            total += entry["loss"] * (entry["step"] - previous)
            previous = entry["step"]
    if previous != resumed_at:
        logger.warning(
            "The log history of the checkpoint at step %d ends at step %d: train_loss is the mean "
            "over the steps after the resume only",
            resumed_at,
            previous,
        )
        return loss_since
    return (total + loss_since * (global_step - resumed_at)) / global_step


def load_base(model_args: ModelArguments, dtype: torch.dtype, path: str | None = None):
    """(model, tokenizer) of an embedded tiny model, or from a path / hub id."""
    name = path or rehearsal.model_name(model_args.model_name_or_path)
    if name in models.TINY_CAUSAL_LMS:
        # The "pre-trained" tiny model is the same for every run and seed: weights from a fixed seed.
        model, tokenizer = models.tiny_causal_lm(name, seed=0)
        return model.to(dtype), tokenizer
    if (
        model_args.attn_implementation == "flash_attention_2"
        and importlib.util.find_spec("flash_attn") is None
    ):
        raise RuntimeError(
            "attn_implementation=flash_attention_2 but flash-attn is not installed; "
            "pip install flash-attn (GPU) or use --attn_implementation sdpa"
        )
    location = models.resolve_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(
        location, dtype=dtype, attn_implementation=model_args.attn_implementation
    )
    return model, tokenizer


def _check_data_fields(rows: list, data_args: DataArguments) -> None:
    """Every row must be an object holding the configured query and response fields."""
    source = data_args.data_path + (f" (subset {data_args.data_subset})" if data_args.data_subset else "")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{source} row {index}: a data row must be an object, got {type(row).__name__}")
        missing = [
            f"{name}_field {value!r}"
            for name, value in (("query", data_args.query_field), ("response", data_args.response_field))
            if value not in row
        ]
        if missing:
            raise ValueError(
                f"{source} row {index} has no {' and no '.join(missing)}; its fields are {sorted(row)}. Set "
                f"query_field / response_field to the data set's names (MetaMathQA: query / response; the "
                f"fxmeng/pissa-dataset subsets: instruction / output; GSM8K: question / answer)."
            )


def _pissa_init(
    model_args: ModelArguments,
    adapter_cfg: adapters.AdapterConfig,
    dtype: torch.dtype,
    args: BALoRATrainingArguments,
) -> str:
    """Path of the residual model of the run's PiSSA decomposition in init_dir: made now if absent,
    else checked to be of the same weights and settings (a reuse for another rank or model is an error)."""
    init_dir = adapter_cfg.init_dir
    model_id = model_args.model_name_or_path
    dtype_name = str(dtype).removeprefix("torch.")

    def expected(fingerprint: str | None) -> dict:
        record = adapters.pissa_init_record(adapter_cfg, model_id, fingerprint, dtype_name)
        if fingerprint is None:  # a hub model not in the local cache: its weights cannot be compared
            del record["weights"]
        return record

    if adapters.pissa_init_complete(init_dir):
        fingerprint = models.weights_fingerprint(rehearsal.model_name(model_id))
        if fingerprint == f"hub:{model_id}":
            logger.warning(
                "%s is not in the local cache: the saved decomposition in %s is checked by model "
                "id and settings only",
                model_id,
                init_dir,
            )
            fingerprint = None
        adapters.check_pissa_init(init_dir, expected(fingerprint))
        logger.info("Reusing the PiSSA decomposition in %s", init_dir)
    else:
        if args.deepspeed and "zero3" in str(args.deepspeed).replace("_", "").lower():
            raise RuntimeError(
                "PiSSA cannot decompose ZeRO-3-partitioned weights: run this command "
                "once with --init_only and without --deepspeed first"
            )
        original, tokenizer = load_base(model_args, dtype)
        logger.info("Decomposing (PiSSA) into %s", init_dir)
        record = expected(models.weights_fingerprint(rehearsal.model_name(model_id)))
        adapters.save_pissa_init(original, adapter_cfg, init_dir, tokenizer, record=record)
        del original
    return str(adapters.pissa_residual_path(init_dir))


def main(argv: list[str] | None = None) -> dict:
    """Train and return the metrics dict written to <output_dir>/metrics.json."""
    start = time.time()
    model_args, data_args, adapter_args, args = parse_args(ARGUMENT_CLASSES, argv, description=__doc__)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity_warning()
    if args.regularizer_task != "nlg":
        raise ValueError("train_nlg.py trains causal LMs: regularizer_task must be 'nlg'")
    output_dir = Path(args.output_dir)
    _check_output_dir(output_dir, adapter_args.overwrite_output_dir, args.resume_from_checkpoint)
    if adapter_args.method not in ("full", "lora", "pissa", "ba-lora"):
        raise ValueError(
            f"train_nlg.py supports method full | lora | pissa | ba-lora, got {adapter_args.method!r}"
        )
    what_runs = resolve_method(adapter_args.method, args)
    warn_if_regularizers_with_full_ft(what_runs["adapter_method"], args)

    adapter_cfg = adapters.AdapterConfig(
        method=what_runs["adapter_method"],
        r=adapter_args.lora_r,
        alpha=adapter_args.lora_alpha if adapter_args.lora_alpha is not None else adapter_args.lora_r,
        dropout=adapter_args.lora_dropout,
        target_modules=adapter_args.target_modules,
        pissa_niter=adapter_args.pissa_niter,
        init_dir=adapter_args.init_dir,
    )
    config = resolved_config(model_args, data_args, adapter_args, args)
    resume = _resolve_resume(output_dir, args.resume_from_checkpoint, config)
    if args.should_save:
        _start_run_dir(output_dir, config)

    # Seed first: randomised PiSSA (pissa_niter) and adapter init draw from the global RNG.
    set_seed(args.seed)
    dtype = DTYPES.get(model_args.model_dtype) or (torch.bfloat16 if args.bf16 else torch.float32)
    if model_args.model_dtype not in ("auto", *DTYPES):
        raise ValueError(f"model_dtype must be auto or one of {list(DTYPES)}, got {model_args.model_dtype!r}")

    # The data first: a wrong field name or an empty split must fail before a 7B model is loaded and
    # decomposed, not after.
    rows = None
    if not adapter_args.init_only:
        rows = data.load_rows(
            data_args.data_path,
            data_args.data_split,
            data_args.data_subset,
            num_embedded=data_args.num_embedded_rows,
            seed=0,
        )
        _check_data_fields(rows, data_args)

    base_path = None
    if adapter_cfg.method == "pissa" and adapter_cfg.init_dir:
        with args.main_process_first(desc="PiSSA decomposition"):
            base_path = _pissa_init(model_args, adapter_cfg, dtype, args)
    if adapter_args.init_only:
        if not adapter_cfg.init_dir:
            raise ValueError("--init_only needs --method pissa and --init_dir")
        return {"init_dir": adapter_cfg.init_dir}

    model, tokenizer = load_base(model_args, dtype, path=base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # LLaMA-2 has no pad token; padded labels are -100 anyway
    model = adapters.prepare_model(model, adapter_cfg)
    trainable = adapters.count_trainable_parameters(model)
    logger.info("Method %s: %s trainable parameters", adapter_cfg.method, f"{trainable:,}")
    if args.gradient_checkpointing:
        args.gradient_checkpointing_kwargs = args.gradient_checkpointing_kwargs or {"use_reentrant": False}
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()

    train_dataset = data.build_dataset(
        rows,
        tokenizer,
        data_args.query_field,
        data_args.response_field,
        data_args.max_length,
        gsm8k_to_metamath=data_args.gsm8k_to_metamath,
    )
    logger.info("Training on %d examples", len(train_dataset))

    trainer = BALoRATrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data.CausalLMCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    trainer.add_callback(_RunFolder(output_dir, config, resume))
    train_result = trainer.train(resume_from_checkpoint=resume)

    metrics = {
        **train_result.metrics,
        "trainable_params": trainable,
        "num_train_examples": len(train_dataset),
        **what_runs,
        "regularizer_preset": args.regularizer_preset,
        **(
            {"rehearsal_standin": rehearsal.model_name(model_args.model_name_or_path)}
            if rehearsal.active()
            else {}
        ),
        "lambdas": {t: getattr(args, f"lambda_{t}") for t in ("consistency", "diversity", "svd")},
    }
    # The Trainer's train_loss averages only the steps of this call: after a resume, the whole run's.
    resumed_at = json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"] if resume else 0
    metrics["train_loss"] = _train_loss_over_run(
        trainer.state.log_history, resumed_at, train_result.training_loss, trainer.state.global_step
    )
    metrics["resumed_from_checkpoint"] = resume
    last_terms = [e for e in trainer.state.log_history if "task_loss" in e]
    if last_terms:
        metrics["final_logged"] = {k: v for k, v in last_terms[-1].items() if k.endswith("_loss")}
    # Under ZeRO-3 the parameters are partitioned: gather a full state dict (a collective, every rank).
    state_dict = None
    if (
        trainer.is_deepspeed_enabled
        and adapter_cfg.method != "full"
        and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    ):
        state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed)
    if trainer.is_world_process_zero():
        _save_outputs(trainer, model, tokenizer, adapter_cfg, adapter_args, output_dir, state_dict)
        (output_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        provenance.write_json(
            output_dir / "run.json",
            provenance.collect(args.seed, start, extra={"config": config, "world_size": args.world_size}),
        )
        provenance.write_json(output_dir / "metrics.json", metrics)
    finish_distributed(trainer)
    return metrics


def _save_outputs(
    trainer, model, tokenizer, adapter_cfg, adapter_args, output_dir: Path, state_dict=None
) -> None:
    if adapter_cfg.method == "full":
        trainer.save_model(str(output_dir / "merged"))
        tokenizer.save_pretrained(output_dir / "merged")
        return
    initial = adapters.pissa_init_adapter_path(adapter_cfg.init_dir) if adapter_cfg.init_dir else None
    adapters.save_adapter(model, output_dir, initial_adapter_dir=initial, state_dict=state_dict)
    if adapter_args.save_merged:
        if state_dict is not None:
            raise ValueError(
                "--save_merged is not supported under ZeRO-3: merge adapter_lora into the "
                "original model after training (eval/ loads adapters directly)"
            )
        if adapter_cfg.method == "pissa":
            model.delete_adapter(adapters.REFERENCE_ADAPTER)
        merged = model.merge_and_unload()
        merged.save_pretrained(output_dir / "merged")
        tokenizer.save_pretrained(output_dir / "merged")


def cli(argv: list[str] | None = None) -> int:
    """Console entry point `balora-train-nlg`: the command line below, returning the exit status."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as error:
        # Input errors: one line and exit status 2; other errors keep their traceback.
        print(f"error: {error}", file=sys.stderr)
        return exit_launched_process(2)
    return exit_launched_process(0)


if __name__ == "__main__":
    sys.exit(cli())
