"""BA-LoRA (or LoRA / PiSSA / full FT) fine-tuning of causal LMs on instruction data (method.md §4).

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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from transformers.trainer_utils import get_last_checkpoint

from balora import adapters, data, models, provenance
from balora.config import parse_args, resolved_config, save_config
from balora.trainer import (
    BALoRATrainer,
    BALoRATrainingArguments,
    finish_distributed,
    warn_if_regularizers_with_full_ft,
)

logger = logging.getLogger("train_nlg")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="tiny-llama", metadata={
        "help": "Hub id or path (meta-llama/Llama-2-7b-hf, ...), or an embedded model: "
                "tiny-llama | tiny-mistral | tiny-gemma | smollm2-135m-instruct."})
    attn_implementation: str = field(default="sdpa", metadata={
        "help": "sdpa | eager | flash_attention_2 (only when flash-attn is installed)."})
    model_dtype: str = field(default="auto", metadata={
        "help": "auto (bfloat16 with --bf16, else float32) | float32 | bfloat16 | float16."})


@dataclass
class DataArguments:
    data_path: str = field(default=data.EMBEDDED_ARITHMETIC, metadata={
        "help": "Hub id (meta-math/MetaMathQA, fxmeng/pissa-dataset), local .json/.jsonl, or embedded:arithmetic."})
    data_subset: str | None = field(default=None, metadata={
        "help": "Hub sub-task directory, e.g. metamath | python | conversation for fxmeng/pissa-dataset."})
    data_split: str = field(default="train", metadata={"help": "Split with slicing, e.g. train[:100000]."})
    query_field: str = field(default="query", metadata={"help": "Field holding the instruction."})
    response_field: str = field(default="response", metadata={"help": "Field holding the response."})
    max_length: int = field(default=512, metadata={"help": "Truncate prompt+response to this many tokens."})
    gsm8k_to_metamath: bool = field(default=False, metadata={
        "help": "Rewrite GSM8K '#### N' answer endings to 'The answer is: N' (MetaMathQA format)."})
    num_embedded_rows: int = field(default=2000, metadata={"help": "Rows generated for embedded:arithmetic."})


@dataclass
class AdapterArguments:
    method: str = field(default="pissa", metadata={
        "help": "full | lora | pissa | ba-lora (= pissa + regularisers: set regularizer_preset or the λs)."})
    lora_r: int = field(default=8, metadata={"help": "Adapter rank r."})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: = r, scaling 1)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Adapter dropout (paper: 0)."})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "Module names to adapt (default: q,k,v,o,gate,up,down _proj)."})
    pissa_niter: int | None = field(default=None, metadata={
        "help": "None: exact SVD; N: randomised SVD with N subspace iterations (peft pissa_niter_N)."})
    init_dir: str | None = field(default=None, metadata={
        "help": "PiSSA: directory of a saved decomposition (residual model + initial adapter), created "
                "on first use and reused by later runs and seeds. Required under ZeRO-3."})
    init_only: bool = field(default=False, metadata={"help": "Only write the PiSSA decomposition to --init_dir and exit."})
    save_merged: bool = field(default=False, metadata={"help": "Also save the merged model to <output_dir>/merged."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Allow writing into an output dir that holds a finished run (metrics.json)."})


# The dataclasses parsed from --config + flags (tests parse every config in configs/ with them).
ARGUMENT_CLASSES = (ModelArguments, DataArguments, AdapterArguments, BALoRATrainingArguments)


def _check_output_dir(output_dir: Path, overwrite: bool, resume: str | None) -> None:
    if (output_dir / "metrics.json").exists() and not overwrite and not resume:
        raise FileExistsError(
            f"{output_dir} holds a finished run (metrics.json). Pass --overwrite_output_dir to replace it, "
            f"or choose another --output_dir.")


def _resolve_resume(output_dir: Path, resume: str | None) -> str | None:
    """'last'/'auto'/'true' resume from the newest checkpoint-* in output_dir; a path is used as given."""
    if not resume:
        return None
    if resume.lower() in ("last", "auto", "true"):
        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no checkpoint-* in {output_dir}")
        return last
    return resume


def load_base(model_args: ModelArguments, dtype: torch.dtype, path: str | None = None):
    """(model, tokenizer) of an embedded tiny model, or from a path / hub id."""
    name = path or model_args.model_name_or_path
    if name in models.TINY_CAUSAL_LMS:
        # The "pre-trained" tiny model is the same for every run and seed: weights from a fixed seed.
        model, tokenizer = models.tiny_causal_lm(name, seed=0)
        return model.to(dtype), tokenizer
    if model_args.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise RuntimeError("attn_implementation=flash_attention_2 but flash-attn is not installed; "
                           "pip install flash-attn (GPU) or use --attn_implementation sdpa")
    location = models.resolve_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype,
                                                 attn_implementation=model_args.attn_implementation)
    return model, tokenizer


def main(argv: list[str] | None = None) -> dict:
    """Train and return the metrics dict written to <output_dir>/metrics.json."""
    start = time.time()
    model_args, data_args, adapter_args, args = parse_args(ARGUMENT_CLASSES, argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    if args.regularizer_task != "nlg":
        raise ValueError("train_nlg.py trains causal LMs: regularizer_task must be 'nlg'")
    output_dir = Path(args.output_dir)
    _check_output_dir(output_dir, adapter_args.overwrite_output_dir, args.resume_from_checkpoint)
    resume = _resolve_resume(output_dir, args.resume_from_checkpoint)
    warn_if_regularizers_with_full_ft(adapter_args.method, args)
    if adapter_args.method not in ("full", "lora", "pissa", "ba-lora"):
        raise ValueError(f"train_nlg.py supports method full | lora | pissa | ba-lora, got {adapter_args.method!r}")
    if adapter_args.method == "ba-lora" and not args.regularizers_enabled:
        raise ValueError("method ba-lora needs the regularisers: set --regularizer_preset iclr2026 (or v5) "
                         "or λ > 0; for PiSSA without them use --method pissa")

    adapter_cfg = adapters.AdapterConfig(
        method="pissa" if adapter_args.method == "ba-lora" else adapter_args.method, r=adapter_args.lora_r,
        alpha=adapter_args.lora_alpha if adapter_args.lora_alpha is not None else adapter_args.lora_r,
        dropout=adapter_args.lora_dropout, target_modules=adapter_args.target_modules,
        pissa_niter=adapter_args.pissa_niter, init_dir=adapter_args.init_dir)
    config = resolved_config(model_args, data_args, adapter_args, args)
    if args.should_save:
        save_config(output_dir / "config.yaml", config)

    # Seed first: randomised PiSSA (pissa_niter) and adapter init draw from the global RNG.
    set_seed(args.seed)
    dtype = DTYPES.get(model_args.model_dtype) or (torch.bfloat16 if args.bf16 else torch.float32)
    if model_args.model_dtype not in ("auto", *DTYPES):
        raise ValueError(f"model_dtype must be auto or one of {list(DTYPES)}, got {model_args.model_dtype!r}")

    base_path = None
    if adapter_cfg.method == "pissa" and adapter_cfg.init_dir:
        with args.main_process_first(desc="PiSSA decomposition"):
            if not adapters.pissa_init_complete(adapter_cfg.init_dir):
                if args.deepspeed and "zero3" in str(args.deepspeed).replace("_", "").lower():
                    raise RuntimeError("PiSSA cannot decompose ZeRO-3-partitioned weights: run this command "
                                       "once with --init_only and without --deepspeed first")
                original, tokenizer = load_base(model_args, dtype)
                logger.info("Decomposing (PiSSA) into %s", adapter_cfg.init_dir)
                adapters.save_pissa_init(original, adapter_cfg, adapter_cfg.init_dir, tokenizer)
                del original
        base_path = str(adapters.pissa_residual_path(adapter_cfg.init_dir))
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

    rows = data.load_rows(data_args.data_path, data_args.data_split, data_args.data_subset,
                          num_embedded=data_args.num_embedded_rows, seed=0)
    train_dataset = data.build_dataset(rows, tokenizer, data_args.query_field, data_args.response_field,
                                       data_args.max_length, gsm8k_to_metamath=data_args.gsm8k_to_metamath)
    logger.info("Training on %d examples", len(train_dataset))

    trainer = BALoRATrainer(model=model, args=args, train_dataset=train_dataset,
                            data_collator=data.CausalLMCollator(tokenizer.pad_token_id),
                            processing_class=tokenizer)
    train_result = trainer.train(resume_from_checkpoint=resume)

    metrics = {**train_result.metrics, "trainable_params": trainable, "num_train_examples": len(train_dataset),
               "method": adapter_cfg.method, "regularizer_preset": args.regularizer_preset,
               "lambdas": {t: getattr(args, f"lambda_{t}") for t in ("consistency", "diversity", "svd")}}
    last_terms = [e for e in trainer.state.log_history if "task_loss" in e]
    if last_terms:
        metrics["final_logged"] = {k: v for k, v in last_terms[-1].items() if k.endswith("_loss")}
    # Under ZeRO-3 the parameters are partitioned: gather a full state dict (a collective, every rank).
    state_dict = None
    if trainer.is_deepspeed_enabled and adapter_cfg.method != "full" and \
            trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed)
    if trainer.is_world_process_zero():
        _save_outputs(trainer, model, tokenizer, adapter_cfg, adapter_args, output_dir, state_dict)
        (output_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        provenance.write_json(output_dir / "run.json", provenance.collect(
            args.seed, start, extra={"config": config, "world_size": args.world_size}))
        provenance.write_json(output_dir / "metrics.json", metrics)
    finish_distributed(trainer)
    return metrics


def _save_outputs(trainer, model, tokenizer, adapter_cfg, adapter_args, output_dir: Path, state_dict=None) -> None:
    if adapter_cfg.method == "full":
        trainer.save_model(str(output_dir / "merged"))
        tokenizer.save_pretrained(output_dir / "merged")
        return
    initial = adapters.pissa_init_adapter_path(adapter_cfg.init_dir) if adapter_cfg.init_dir else None
    adapters.save_adapter(model, output_dir, initial_adapter_dir=initial, state_dict=state_dict)
    if adapter_args.save_merged:
        if state_dict is not None:
            raise ValueError("--save_merged is not supported under ZeRO-3: merge adapter_lora into the "
                             "original model after training (eval/ loads adapters directly)")
        if adapter_cfg.method == "pissa":
            model.delete_adapter(adapters.REFERENCE_ADAPTER)
        merged = model.merge_and_unload()
        merged.save_pretrained(output_dir / "merged")
        tokenizer.save_pretrained(output_dir / "merged")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as error:
        # Input errors: a clear one-line message and a non-zero exit; other errors keep their traceback.
        logging.getLogger("train_nlg").error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
