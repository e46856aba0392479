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
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from balora import adapters
from balora.cli import lifecycle
from balora.repro import data, models, rehearsal
from balora.repro.config import parse_args, resolved_config
from balora.trainer import BALoRATrainer, BALoRATrainingArguments

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

    def __post_init__(self):
        if self.model_dtype not in ("auto", *DTYPES):
            raise ValueError(
                f"--model_dtype must be auto or one of {' | '.join(DTYPES)}, got {self.model_dtype!r}"
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

    def __post_init__(self):
        for name in ("max_length", "num_embedded_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class NLGAdapterArguments(adapters.AdapterArguments):
    """The adapter flags (α = r unless set), the PiSSA decomposition's folder and the run's outputs."""

    method_choices: ClassVar[tuple[str, ...]] = ("full", "lora", "pissa", "ba-lora")

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
ARGUMENT_CLASSES = (ModelArguments, DataArguments, NLGAdapterArguments, BALoRATrainingArguments)


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
        raise ValueError(
            "attn_implementation=flash_attention_2 but flash-attn is not installed; "
            "pip install flash-attn (GPU) or use --attn_implementation sdpa"
        )
    location = models.resolve_model_path(name)
    with lifecycle.loading_model(name):
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
            raise ValueError(
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
    model_args, data_args, adapter_args, args = parse_args(ARGUMENT_CLASSES, argv, description=__doc__)
    lifecycle.skip_unused_deepspeed_cpu_kernel(args)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity_warning()
    if args.regularizer_task != "nlg":
        raise ValueError("train_nlg.py trains causal LMs: regularizer_task must be 'nlg'")
    lifecycle.check_training_arguments(args)
    what_runs = lifecycle.resolve_method(adapter_args.method, args)
    lifecycle.warn_if_regularizers_with_full_ft(what_runs["adapter_method"], args)

    adapter_cfg = adapter_args.to_config(init_dir=adapter_args.init_dir)
    if adapter_args.init_only and not adapter_cfg.init_dir:
        raise ValueError("--init_only needs --method pissa and --init_dir")
    config = resolved_config(model_args, data_args, adapter_args, args)
    run = lifecycle.Run(
        args.output_dir,
        config,
        overwrite=adapter_args.overwrite_output_dir,
        resume=args.resume_from_checkpoint,
    )

    # Seed first: randomised PiSSA (pissa_niter) and adapter init draw from the global RNG.
    set_seed(args.seed)
    dtype = DTYPES.get(model_args.model_dtype) or (torch.bfloat16 if args.bf16 else torch.float32)

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
        return {"init_dir": adapter_cfg.init_dir}

    model, tokenizer = load_base(model_args, dtype, path=base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # LLaMA-2 has no pad token; padded labels are -100 anyway
    model = adapters.prepare_model(model, adapter_cfg)
    trainable = adapters.count_trainable_parameters(model)
    logger.info("Method %s: %s trainable parameters", adapter_args.method, f"{trainable:,}")
    if args.activation_checkpointing:  # --gradient_checkpointing, under its transformers 5 name
        # Non-reentrant checkpointing, stated: the reentrant kind needs inputs that require grad.
        args.activation_checkpointing_kwargs = args.activation_checkpointing_kwargs or {
            "use_reentrant": False
        }
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
        callbacks=run.callbacks(model),
    )
    train_result = trainer.train(resume_from_checkpoint=run.checkpoint)

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
    metrics["train_loss"] = lifecycle.train_loss_over_run(
        trainer.state.log_history, run.resumed_at, train_result.training_loss, trainer.state.global_step
    )
    metrics["resumed_from_checkpoint"] = run.checkpoint
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
    if adapter_cfg.method == "full":  # every rank: under ZeRO-3 save_model gathers (rank 0 writes)
        trainer.save_model(str(run.output_dir / "merged"))
    if trainer.is_world_process_zero():
        _save_outputs(trainer, model, tokenizer, adapter_cfg, adapter_args, run.output_dir, state_dict)
    run.finish(trainer, metrics, args.seed, extra={"config": config, "world_size": args.world_size})
    lifecycle.finish_distributed(trainer)
    return metrics


def _save_outputs(
    trainer, model, tokenizer, adapter_cfg, adapter_args, output_dir: Path, state_dict=None
) -> None:
    if adapter_cfg.method == "full":  # the model itself: saved by every rank before this
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
    return lifecycle.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
