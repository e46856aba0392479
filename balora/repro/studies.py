"""The study registry: every grid of the reproduction (paper tables and figures, mini and probe studies).

A study is one `Study` entry of STUDIES: its grid axes (models, methods, data, ranks, tasks, seeds, ...)
with their defaults, a grid function that turns them into runs (`RunSpec`: run id, config, training
flags, evaluations, estimate), its resources, what its rehearsal changes (`rehearse`, `quick`), and the
tables and figures it feeds (commands of aggregate_results.py / plot_results.py / tsne_visualization.py,
which name each table or figure by its builder in balora/repro/results.py and plot_results.py).

The registry is Python, not YAML: several grids are computed (λ scaled from the iclr2026 preset, the
mini grid's seed order, per-run CPU estimates from each config's epochs and rows), which a YAML grid
would need a small language for; a plain function keeps each study readable in one place and testable.

`python -m balora.repro.run STUDY` runs a study (balora/repro/run.py); `python -m balora.repro.studies`
lists them, `--write-configs` writes the configs its grids plan (configs/glue from glue_configs.py,
configs/nlg and configs/mini from nlg_configs.py; HAND_WRITTEN_CONFIGS lists the rest) and `--check` fails
on a generated config edited by hand.

Run ids are `<study folder>/<run name>/seed<k>` (results/<id>/, outputs/<id>/); the table specs of
balora/repro/results.py read these run names.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

# What one run needs on a cluster (gpus_per_node, nodes, time_minutes, partition, cpus_per_task, mem_gb).
from balora.repro.executors import Resources

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

PAPER_SEEDS = (42, 1024, 2024)

MODEL_ID = {
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "gemma-7b": "google/gemma-7b",
    "llama2-13b": "meta-llama/Llama-2-13b-hf",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama3-70b": "meta-llama/Meta-Llama-3-70B",
    "qwen1.5-7b": "Qwen/Qwen1.5-7B",
    "yi1.5-34b": "01-ai/Yi-1.5-34B",
    "smollm2": "smollm2-135m-instruct",
    "tiny": "tiny-llama",
}
SUBSET_BENCHES = {
    "metamath": ("gsm8k", "math"),
    "python": ("humaneval", "mbpp"),
    "conversation": ("mt_bench",),
}
GLUE_TASKS = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")
GLUE_METHODS = (
    "full",
    "bitfit",
    "hadapter",
    "padapter",
    "lora",
    "loha",
    "dora",
    "adalora",
    "pissa",
    "ba-lora",
)
# The tasks whose train TSVs are in the data folder's glue/ (the MiniLM grid).
MINILM_TASKS = ("rte", "mrpc", "sst2", "cola", "stsb")

# Regulariser ablation: the λ flags that switch terms off (explicit flags win over the config's preset).
ABLATION_FLAGS = {
    "noreg": ("--lambda_consistency", "0", "--lambda_diversity", "0", "--lambda_svd", "0"),
    "consistency": ("--lambda_diversity", "0", "--lambda_svd", "0"),
    "diversity": ("--lambda_consistency", "0", "--lambda_svd", "0"),
    "svd": ("--lambda_consistency", "0", "--lambda_diversity", "0"),
    "all": (),
}
# The ICLR-2026 NLG λ (docs/method.md §3; the configs' regularizer_preset iclr2026).
ICLR2026_NLG_LAMBDA = {"consistency": 0.025, "diversity": 0.005, "svd": 0.005}
# Printed names (tables, figures) of the axes' values: methods, tasks, benchmarks, models, the regulariser
# ablation's variants (λ switched off: ABLATION_FLAGS) and the NLU diversity forms.
LABELS = {
    "full": "Full FT", "bitfit": "BitFit", "hadapter": "HAdapter", "padapter": "PAdapter", "lora": "LoRA",
    "loha": "LoHa", "dora": "DoRA", "adalora": "AdaLoRA", "pissa": "PiSSA", "ba-lora": "BA-LoRA",
    "lora-reg": "LoRA + Reg", "mnli": "MNLI", "sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "qnli": "QNLI",
    "qqp": "QQP", "rte": "RTE", "stsb": "STS-B", "gsm8k": "GSM8K", "math": "MATH", "humaneval": "HumanEval",
    "mbpp": "MBPP", "mt_bench": "MT-Bench", "roberta-base": "RoBERTa-base", "t5-base": "T5-base",
    "deberta-v3-base": "DeBERTa-v3-base", "smollm2": "SmolLM2-135M-Instruct", "llama2-7b": "LLaMA-2-7B",
    "llama2-13b": "LLaMA-2-13B", "llama3-8b": "LLaMA-3-8B", "llama3-70b": "LLaMA-3-70B",
    "mistral-7b": "Mistral-7B", "gemma-7b": "Gemma-7B", "qwen1.5-7b": "Qwen1.5-7B", "yi1.5-34b": "Yi-1.5-34B",
    "noreg": "w/o reg (PiSSA)", "consistency": "consistency only", "diversity": "diversity only",
    "svd": "SVD only", "all": "BA-LoRA (all three)", "covariance": "BA-LoRA (covariance diversity)",
    "entropy": "BA-LoRA (entropy diversity)",
}  # fmt: skip


def labelled(keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """("lora", "LoRA"), ... for the keys."""
    return tuple((key, LABELS[key]) for key in keys)


NLG_7B = Resources(gpus_per_node=8, time_minutes=16 * 60)
NLG_LARGE = Resources(gpus_per_node=8, nodes=2, time_minutes=48 * 60)  # 34B and 70B under ZeRO-3
GLUE_GPU = Resources(gpus_per_node=1, time_minutes=12 * 60)
CPU_RUN = Resources(gpus_per_node=0, time_minutes=120, cpus_per_task=2)


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: what to train (config + flags) and what to evaluate; stage commands are built
    from it by balora/repro/run.py."""

    study: str  # the results folder of the run, e.g. "nlg", "mini/nlu"
    name: str
    seed: int
    kind: str  # "nlg" (train_nlg.py + eval/*.py) or "glue" (finetune_glue.py)
    model: str
    method: str  # ba-lora / pissa: a PiSSA init stage; full: evaluations read train/merged
    config: str  # repository-relative path of the flat YAML config
    flags: tuple[str, ...] = ()  # training flags after the config's (command-line overrides)
    benches: tuple[str, ...] = ()  # NLG evaluations, one stage each
    eval_profile: str = "paper"  # "paper", "mini" or "tiny": the evaluators' data and limits
    launcher: str = "gpus"  # "gpus" (DeepSpeed on the GPUs), "cpu" (one process)
    glue_dir: str = ""  # local GLUE TSVs ("" = the nyu-mll/glue hub dataset)
    estimate_s: int = 0
    resources: Resources = field(default_factory=Resources)

    @property
    def run_id(self) -> str:
        return f"{self.study}/{self.name}/seed{self.seed}"


@dataclass(frozen=True)
class Settings:
    """What a grid function reads besides its axes: the rehearsal switch and the data folders."""

    rehearse: bool = False
    data_dir: str = "data"
    glue_dir: str = ""


Axes = dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Study:
    name: str
    doc: str
    grid: Callable[[Axes, tuple[int, ...], Settings], list[RunSpec]]
    axes: Axes = field(default_factory=dict)
    seeds: tuple[int, ...] = PAPER_SEEDS
    # Tables and figures at the end: argv templates ({py}, {results}, {outputs}, {seed0} filled in).
    finish: tuple[tuple[str, ...], ...] = ()
    # Axis values under --rehearse (e.g. tsne_steps' dump steps for a 2-step run), and under
    # --rehearse --quick (one model per table, the extreme ranks, three GLUE tasks).
    rehearse: Axes = field(default_factory=dict)
    quick: Axes = field(default_factory=dict)
    # Checks of the axes beyond "a config exists": a message for a grid that cannot work, else None.
    check: Callable[[Axes], str | None] | None = None

    def axes_for(self, rehearse: bool, quick: bool, overrides: Axes | None = None) -> Axes:
        axes = dict(self.axes)
        if rehearse:
            axes.update(self.rehearse)
        if rehearse and quick:
            axes.update(self.quick)
        axes.update(overrides or {})
        return axes

    def runs(
        self,
        seeds: tuple[int, ...] | None = None,
        *,
        settings: Settings = Settings(),
        quick: bool = False,
        overrides: Axes | None = None,
    ) -> list[RunSpec]:
        if seeds is None:
            seeds = self.seeds[:1] if settings.rehearse else self.seeds
        return self.grid(self.axes_for(settings.rehearse, quick, overrides), seeds, settings)


# --- run builders ------------------------------------------------------------------------------------


def lora_rank(config: str, flags: tuple[str, ...]) -> str:
    """The rank a run trains at: the last --lora_r flag, else the config's lora_r."""
    value = ""
    for flag, nxt in zip(flags, flags[1:], strict=False):
        if flag == "--lora_r":
            value = nxt
    if value:
        return value
    path = REPO_ROOT / config
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("lora_r:"):
                return line.split(":", 1)[1].split("#")[0].strip()
    return "unknown"


def nlg_run(study, name, seed, model, method, subset, flags=(), benches=None, **kw) -> RunSpec:
    resources = NLG_LARGE if model in ("llama3-70b", "yi1.5-34b") else NLG_7B
    return RunSpec(
        study=study,
        name=name,
        seed=seed,
        kind="nlg",
        model=model,
        method=method,
        config=kw.pop("config", f"configs/nlg/{model}_{subset}_{method}.yaml"),
        flags=tuple(flags),
        benches=tuple(benches if benches is not None else SUBSET_BENCHES[subset]),
        resources=kw.pop("resources", resources),
        **kw,
    )


def glue_run(study, name, seed, config, flags=(), settings: Settings = Settings(), **kw) -> RunSpec:
    model = Path(config).stem.split("_")[1]
    method = Path(config).stem.split("_", 2)[2]
    return RunSpec(
        study=study,
        name=name,
        seed=seed,
        kind="glue",
        model=model,
        method=method,
        config=config,
        flags=tuple(flags),
        launcher="cpu",
        glue_dir=kw.pop("glue_dir", "" if settings.rehearse else settings.glue_dir),
        resources=kw.pop("resources", GLUE_GPU),
        **kw,
    )


def glue_grid_runs(study: str, models, tasks, methods, seeds, settings: Settings, flags=()) -> list[RunSpec]:
    runs = []
    for model in models:
        for task in tasks:
            for method in methods:
                for seed in seeds:
                    cfg = f"configs/glue/{task}_{model}_{method}.yaml"
                    runs.append(glue_run(study, f"{task}_{model}_{method}", seed, cfg, flags, settings))
    return runs


# --- the paper's grids --------------------------------------------------------------------------------


def _nlg_table(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    return [
        nlg_run("nlg", f"{model}_{method}_{subset}", seed, model, method, subset)
        for model in a["models"]
        for method in a["methods"]
        for subset in a["subsets"]
        for seed in seeds
    ]


def _rank_sweep(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    runs = []
    for model in a["models"]:
        for method in a["methods"]:
            for r in a["ranks"]:
                for seed in seeds:
                    runs.append(
                        nlg_run(
                            "rank_sweep",
                            f"{model}_{method}_r{r}",
                            seed,
                            model,
                            method,
                            "metamath",
                            ("--lora_r", r, "--lora_alpha", r),
                        )
                    )
        if a["with_full_ft"] == ("1",):
            runs += [
                nlg_run("rank_sweep", f"{model}_full", seed, model, "full", "metamath") for seed in seeds
            ]
    return runs


def _loss_curves(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    nlg = _nlg_table({**a, "subsets": ("metamath",)}, seeds, s)
    sweep = _rank_sweep(
        {"models": a["models"][:1], "methods": a["r32_methods"], "ranks": ("32",), "with_full_ft": ("0",)},
        seeds,
        s,
    )
    return nlg + sweep


def _ablation(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    runs = []
    model = a["nlg_model"][0]
    for variant in a["variants"]:
        for seed in seeds:
            runs.append(
                nlg_run(
                    "ablation",
                    f"{model}_{variant}",
                    seed,
                    model,
                    "ba-lora",
                    "metamath",
                    ABLATION_FLAGS[variant],
                )
            )
        for task in a["glue_tasks"]:
            for seed in seeds:
                cfg = f"configs/glue/{task}_{a['nlu_model'][0]}_ba-lora.yaml"
                runs.append(
                    glue_run("ablation", f"glue_{task}_{variant}", seed, cfg, ABLATION_FLAGS[variant], s)
                )
    return runs


def _ablation_llms(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    return [
        nlg_run("ablation", f"{model}_{variant}", seed, model, "ba-lora", "metamath", ABLATION_FLAGS[variant])
        for model in a["models"]
        for variant in a["variants"]
        for seed in seeds
    ]


def _lambda_sensitivity(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    runs = []
    for model in a["models"]:
        for term in a["terms"]:
            for scale in a["scales"]:
                value = f"{ICLR2026_NLG_LAMBDA[term] * float(scale):.6g}"
                for seed in seeds:
                    runs.append(
                        nlg_run(
                            "lambda_sensitivity",
                            f"{model}_{term}_x{scale}",
                            seed,
                            model,
                            "ba-lora",
                            "metamath",
                            (f"--lambda_{term}", value),
                        )
                    )
    return runs


def _lora_reg(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    return [
        nlg_run(
            "lora_reg",
            f"{model}_lora-reg_{subset}",
            seed,
            model,
            "lora",
            subset,
            ("--regularizer_preset", a["preset"][0]),
        )
        for model in a["models"]
        for subset in a["subsets"]
        for seed in seeds
    ]


# The model range scores one benchmark per training set, as the paper reports it.
MODEL_RANGE_BENCHES = {"metamath": ("gsm8k",), "python": ("humaneval",), "conversation": ("mt_bench",)}


def _model_range(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    return [
        nlg_run(
            "model_range",
            f"{model}_{method}_{subset}",
            seed,
            model,
            method,
            subset,
            benches=MODEL_RANGE_BENCHES[subset],
        )
        for model in a["models"]
        for method in a["methods"]
        for subset in a["subsets"]
        for seed in seeds
    ]


def _glue(study: str):
    def grid(a: Axes, seeds, s: Settings) -> list[RunSpec]:
        runs = []
        for model in a["models"]:
            tasks = a.get("tasks") or (MINILM_TASKS if model == "minilm" else GLUE_TASKS)
            glue_dir = s.glue_dir or (f"{s.data_dir}/glue" if model == "minilm" and not s.rehearse else "")
            runs += glue_grid_runs(study, (model,), tasks, a["methods"], seeds, replace(s, glue_dir=glue_dir))
        return runs

    return grid


def _nlu_diversity(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    task, model = a["task"][0], a["model"][0]
    runs = [
        # The full-distribution entropy over the C classes (−mean H, maximised), the v1-v5 NLG form.
        glue_run(
            "nlu_diversity",
            f"{task}_{model}_ba-lora-entropy",
            seed,
            f"configs/glue/{task}_{model}_ba-lora.yaml",
            ("--diversity_type", "entropy"),
            s,
        )
        for seed in seeds
    ]
    return runs + glue_grid_runs("nlu", (model,), (task,), ("ba-lora", "lora"), seeds, s)


def imbalance_run(task: str, model: str | None, method: str, minority: str, ratio: int) -> str:
    """Run name of an imbalance probe: <task>[_<model>]_<method>_<minority>1to<ratio>."""
    return "_".join(filter(None, (task, model, method, f"{minority}1to{ratio}")))


def _imbalanced_mnli(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    cls, ratio, model = a["minority_class"][0], a["ratio"][0], a["model"][0]
    return [
        glue_run(
            "imbalanced_mnli",
            imbalance_run("mnli", model, method, cls, ratio),
            seed,
            f"configs/glue/mnli_{model}_{method}.yaml",
            ("--minority_class", cls, "--imbalance_ratio", ratio),
            s,
        )
        for seed in seeds
        for method in a["methods"]
    ]


def _tsne(study: str, dump: bool):
    def grid(a: Axes, seeds, s: Settings) -> list[RunSpec]:
        flags = ("--feature_dump_steps", a["dump_steps"][0]) if dump else ()
        return [
            glue_run(
                study,
                f"{model}_{method}",
                seed,
                f"configs/glue/{a['task'][0]}_{model}_{method}.yaml",
                flags,
                s,
            )
            for model in a["models"]
            for method in a["methods"]
            for seed in seeds
        ]

    return grid


def _check_tsne_steps(a: Axes) -> str | None:
    dump = a["dump_steps"][0]
    if not dump.isdigit() or int(dump) <= 0:
        return f"dump_steps {dump}: not a positive step count"
    for step in a["steps"]:
        if step != "final" and (not step.isdigit() or int(step) % int(dump)):
            return f"step {step} is not a multiple of dump_steps={dump}: no features are dumped there"
    return None


def tsne_finish(
    study: str, fig_dir: str, steps: tuple[str, ...] | None, a: Axes
) -> tuple[tuple[str, ...], ...]:
    dirs = tuple(
        f"{{outputs}}/{study}/{m}_{k}/seed{{seed0}}/train" for m in a["models"] for k in a["methods"]
    )
    titles = tuple(f"{m} {k}" for m in a["models"] for k in a["methods"])
    base = ("{py}", "tsne_visualization.py", "--compare")
    tail = ("--features_dir", *dirs, "--titles", *titles, "--output_dir", fig_dir)
    if steps is None:
        return (base + tail,)
    return tuple(base + ("--step", step) + tail for step in steps)


# --- the CPU mini-reproduction ------------------------------------------------------------------------
# Estimates come from step times measured on an idle 2-core machine with 2 threads (SmolLM2 4×256: LoRA
# ~6.2 s, BA-LoRA 8.4 s per step; GSM8K generation 2.8 s per problem; MiniLM 32×128 LoRA step 2.2 s,
# scaled by each task's mean padded batch length) and the factors below.
GSM8K_LIMIT = 64
GSM8K_MAX_NEW_TOKENS = 256
NLG_STEPS, NLG_STEP_S, NLG_LOAD_S = 40, 6.2, 35
GSM8K_GENERATION_S = GSM8K_LIMIT * 28 // 10 + 15
GSM8K_NLL_S = GSM8K_LIMIT // 2 + 20
NLU_STEP_S_128, NLU_RUN_OVERHEAD_S = 2.2, 15
# Mean padded batch length of 32 MiniLM-tokenised rows (measured on 2,000 train rows per task).
NLU_BATCH_LEN = {"sst2": 39, "cola": 23, "mrpc": 81, "rte": 128, "stsb": 34}
NLU_TRAIN_ROWS = {"sst2": 67349, "cola": 8551, "mrpc": 3668, "rte": 2490, "stsb": 5749}


def method_factor(method: str) -> float:
    """Relative cost of one training step against LoRA (reference forward for BA-LoRA; full backward)."""
    if method in ("ba-lora", "consistency", "diversity", "svd", "lora-reg"):
        return 1.35
    return {"full": 2.0, "dora": 1.3, "adalora": 1.1}.get(method, 1.0)


def nlg_estimate(method: str, benches: tuple[str, ...]) -> int:
    eval_s = (GSM8K_GENERATION_S if "gsm8k" in benches else 0) + (
        GSM8K_NLL_S if "gsm8k_nll" in benches else 0
    )
    return int(NLG_STEPS * NLG_STEP_S * method_factor(method) + NLG_LOAD_S + eval_s)


def config_value(cfg: str, key: str) -> str | None:
    path = REPO_ROOT / cfg
    for line in path.read_text().splitlines():
        if line.split(":", 1)[0] == key and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def nlu_estimate(cfg: str, task: str, method: str, rows_override: int | None = None) -> int:
    """Seconds for a MiniLM run: steps from the config × the step time scaled by the task's length."""
    if not (REPO_ROOT / cfg).is_file():
        return 0
    epochs = float(config_value(cfg, "num_train_epochs") or 1)
    bs = float(config_value(cfg, "per_device_train_batch_size") or 32)
    cap = float(config_value(cfg, "max_train_samples") or NLU_TRAIN_ROWS[task])
    if rows_override is not None:
        cap = rows_override
    rows = min(cap, NLU_TRAIN_ROWS[task])
    steps = int((rows + bs - 1) / bs) * epochs
    step_s = max(NLU_STEP_S_128 * NLU_BATCH_LEN[task] / 128, 0.1)
    return int(steps * step_s * bs / 32 * method_factor(method) + NLU_RUN_OVERHEAD_S)


def mini_nlg(study, name, seed, method, benches, flags, s: Settings, estimate_method=None) -> RunSpec:
    return nlg_run(
        study,
        name,
        seed,
        "smollm2",
        method,
        "gsm8k",
        ("--data_path", f"{s.data_dir}/gsm8k/train.jsonl", *flags),
        benches=benches,
        config=f"configs/mini/smollm2_gsm8k_{method}.yaml",
        eval_profile="mini",
        launcher="cpu",
        estimate_s=nlg_estimate(estimate_method or method, benches),
        resources=CPU_RUN,
    )


def mini_glue(study, name, seed, cfg, task, flags, s: Settings, estimate_method, rows=None) -> RunSpec:
    return glue_run(
        study,
        name,
        seed,
        cfg,
        flags,
        s,
        glue_dir=s.glue_dir or f"{s.data_dir}/glue",
        estimate_s=nlu_estimate(cfg, task, estimate_method, rows),
        resources=CPU_RUN,
    )


def _mini(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    benches = a["nlg_benches"]
    nlg_methods = (("full",) if a["full_ft"] == ("1",) else ()) + a["nlg_methods"]

    def main_tables(seed: int) -> list[RunSpec]:
        runs = [mini_nlg("mini/nlg", f"smollm2_{m}", seed, m, benches, (), s) for m in nlg_methods]
        for task in a["nlu_tasks"]:
            for method in a["nlu_methods"]:
                cfg = f"configs/glue/{task}_minilm_{method}.yaml"
                runs.append(mini_glue("mini/nlu", f"{task}_{method}", seed, cfg, task, (), s, method))
        return runs

    runs = main_tables(seeds[0])
    rank_seeds = tuple(int(x) for x in a["rank_seeds"]) if a.get("rank_seeds") else seeds[:1]
    ablation_seeds = tuple(int(x) for x in a["ablation_seeds"]) if a.get("ablation_seeds") else seeds[:1]
    for method in ("lora", "pissa", "ba-lora"):
        for r in a["ranks"]:
            for seed in rank_seeds:
                flags = ("--lora_r", r, "--lora_alpha", r)
                runs.append(
                    mini_nlg("mini/rank_sweep", f"smollm2_{method}_r{r}", seed, method, benches, flags, s)
                )
    for variant in a["ablation_variants"]:
        flags = ABLATION_FLAGS[variant]
        for seed in ablation_seeds:
            runs.append(
                mini_nlg("mini/ablation", f"smollm2_{variant}", seed, "ba-lora", benches, flags, s, variant)
            )
        for task in a["ablation_tasks"]:
            cfg = f"configs/glue/{task}_minilm_ba-lora.yaml"
            for seed in ablation_seeds:
                runs.append(
                    mini_glue("mini/ablation", f"{task}_{variant}", seed, cfg, task, flags, s, variant)
                )
    for seed in seeds[1:]:
        runs += main_tables(seed)
    return runs


MINI_AXES: Axes = {
    "nlg_methods": ("lora", "pissa", "ba-lora"),
    "full_ft": ("0",),  # 1: add Full FT to the NLG table (+~0.6 h)
    "nlg_benches": ("gsm8k", "gsm8k_nll"),  # gsm8k_nll alone skips ~4 min of generation per run
    "ranks": ("1", "4", "64"),  # r = 16 is the main NLG table's rank and is reused
    "rank_seeds": (),  # empty: the first seed (CPU time)
    "ablation_variants": ("consistency", "diversity", "svd"),  # noreg/all = main PiSSA/BA-LoRA runs
    "ablation_seeds": (),  # empty: the first seed
    "ablation_tasks": ("mrpc", "stsb"),
    "nlu_tasks": ("sst2", "cola", "mrpc", "rte", "stsb"),
    "nlu_methods": ("full", "bitfit", "lora", "dora", "adalora", "pissa", "ba-lora"),
}
MINI_FINISH = (
    (
        "{py}", "aggregate_results.py", "mini_nlg", "mini_nlu", "mini_ablation", "mini_nll_paired",
        "--results_dir", "{results}", "--out_dir", "{results}/mini/tables", "--paper",
    ),
    (
        "{py}", "plot_results.py", "mini_rank_sweep", "mini_ablation", "mini_loss_curves",
        "--results_dir", "{results}", "--out_dir", "{results}/mini/figures",
    ),
    (
        "{py}", "tsne_visualization.py", "--compare", "--features_dir",
        "{outputs}/mini/nlu/sst2_lora/seed{seed0}/train", "{outputs}/mini/nlu/sst2_ba-lora/seed{seed0}/train",
        "--titles", "MiniLM LoRA", "MiniLM BA-LoRA", "--output_dir", "{results}/mini/figures",
    ),
)  # fmt: skip


def _scaled(value: float, scale: str) -> str:
    return f"{value * float(scale):.10g}"


def _mini_probes(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    from balora.regularizers import preset

    _, lam = preset("iclr2026", "nlg")
    probes, benches = a["probes"], a["nlg_benches"]
    runs = []
    for seed in seeds:
        for method in a["methods"]:
            cfg = f"configs/glue/sst2_minilm_{method}.yaml"
            if "imbalance" in probes:
                for ratio in a["imbalance_ratios"]:
                    # ~1,800 negatives in the first 4,000 rows + the positives kept
                    rows = 1800 + 1800 // int(ratio)
                    flags = ("--minority_class", a["minority_class"][0], "--imbalance_ratio", ratio)
                    name = imbalance_run("sst2", None, method, a["minority_class"][0], ratio)
                    runs.append(mini_glue("mini/imbalance", name, seed, cfg, "sst2", flags, s, method, rows))
            if "noise" in probes:
                for level in a["noise_percents"]:
                    flags = ("--label_noise", _scaled(float(level), "0.01"))
                    name = f"sst2_{method}_noise{level}"
                    runs.append(mini_glue("mini/label_noise", name, seed, cfg, "sst2", flags, s, method))
        if "lambda" in probes:
            for scale in a["lambda_scales"]:
                flags = tuple(
                    x
                    for term in ("consistency", "diversity", "svd")
                    for x in (f"--lambda_{term}", _scaled(float(lam[term]), scale))
                )
                name = f"smollm2_ba-lora_lambda_x{scale}"
                runs.append(mini_nlg("mini/lambda_scale", name, seed, "ba-lora", benches, flags, s))
        if "lora_reg" in probes:
            for task in a["lora_reg_tasks"]:
                flags = ("--regularizer_preset", "iclr2026")
                if task == "gsm8k":
                    runs.append(
                        mini_nlg(
                            "mini/lora_reg", "smollm2_lora-reg", seed, "lora", benches, flags, s, "lora-reg"
                        )
                    )
                    continue
                cfg = f"configs/glue/{task}_minilm_lora.yaml"
                runs.append(
                    mini_glue("mini/lora_reg", f"{task}_lora-reg", seed, cfg, task, flags, s, "lora-reg")
                )
    if "seeds" in probes:
        # The mini rank sweep and ablation at every seed (with the main tables they complete).
        mini_axes = {**MINI_AXES, "nlg_benches": benches, "full_ft": a["full_ft"]}
        mini_axes["rank_seeds"] = mini_axes["ablation_seeds"] = tuple(str(x) for x in seeds)
        runs += _mini(mini_axes, seeds, s)
    return runs


def _tiny(a: Axes, seeds, s: Settings) -> list[RunSpec]:
    return [
        nlg_run(
            "tiny",
            "tiny_ba-lora",
            seed,
            "tiny",
            "ba-lora",
            "gsm8k",
            (
                "--max_steps",
                a["max_steps"][0],
                "--save_steps",
                a["save_steps"][0],
                "--save_strategy",
                "steps",
            ),
            benches=("gsm8k_nll",),
            config="configs/tiny/nlg.yaml",
            eval_profile="tiny",
            launcher="cpu",
            estimate_s=30,
            resources=CPU_RUN,
        )
        for seed in seeds
    ]


def _table(*names: str, paper: bool = True, out: str = "{results}/tables") -> tuple[str, ...]:
    return ("{py}", "aggregate_results.py", *names, "--results_dir", "{results}", "--out_dir", out) + (
        ("--paper",) if paper else ()
    )


def _figure(*names: str, out: str = "{results}/figures") -> tuple[str, ...]:
    return ("{py}", "plot_results.py", *names, "--results_dir", "{results}", "--out_dir", out)


NLG_AXES: Axes = {
    "models": ("llama2-7b", "mistral-7b", "gemma-7b"),
    "methods": ("full", "lora", "pissa", "ba-lora"),
    "subsets": ("metamath", "python", "conversation"),
}
RANK_AXES: Axes = {
    "models": ("llama2-7b", "mistral-7b"),
    "methods": ("lora", "pissa", "ba-lora"),
    "ranks": ("1", "2", "4", "8", "16", "32", "64", "128"),
    "with_full_ft": ("1",),
}
QUICK_GLUE_TASKS = ("rte", "stsb", "mnli")
TSNE_AXES: Axes = {"task": ("mnli",), "models": ("bert-large", "gpt2-xl"), "methods": ("lora", "ba-lora")}
TSNE_STEPS_AXES: Axes = {**TSNE_AXES, "dump_steps": ("2000",), "steps": ("2000", "6000", "12000", "final")}
# A rehearsal run trains 1-2 steps: dump the features at every step, draw step 1 and the final one.
TSNE_STEPS_REHEARSE: Axes = {"dump_steps": ("1",), "steps": ("1", "final")}


def _study_list() -> list[Study]:
    studies = [
        Study(
            "nlg_table",
            "NLG main table: {LLaMA-2-7B, Mistral-7B, Gemma-7B} × {Full FT, LoRA, PiSSA, BA-LoRA} × "
            "{MetaMathQA → GSM8K, MATH; CodeFeedback → HumanEval, MBPP; WizardLM → MT-Bench}",
            _nlg_table,
            NLG_AXES,
            finish=(_table("nlg"),),
            quick={"models": ("llama2-7b",)},
        ),
        Study(
            "nlu_table",
            "NLU table: DeBERTa-v3-base, 10 methods × 8 GLUE tasks (dev sets)",
            _glue("nlu"),
            {"models": ("deberta-v3-base",), "tasks": GLUE_TASKS, "methods": GLUE_METHODS},
            finish=(_table("nlu"),),
            quick={"tasks": QUICK_GLUE_TASKS},
        ),
        Study(
            "ba-lora",
            "The BA-LoRA rows of the NLG table",
            _nlg_table,
            {**NLG_AXES, "methods": ("ba-lora",)},
            finish=(_table("nlg"),),
            quick={"models": ("llama2-7b",)},
        ),
        Study(
            "loss_curves",
            "Training-loss curves (r = 128: the NLG table's LLaMA-2-7B metamath runs; r = 32: the rank sweep's)",
            _loss_curves,
            {
                "models": ("llama2-7b",),
                "methods": NLG_AXES["methods"],
                "r32_methods": ("lora", "pissa", "ba-lora"),
            },
            finish=(_table("nlg"), _figure("rank_sweep"), _figure("loss_curves", "loss_curves_r32")),
        ),
        Study(
            "rank_sweep",
            "Rank sweep r = 1…128 for LoRA, PiSSA, BA-LoRA on LLaMA-2-7B and Mistral-7B (MetaMathQA), Full FT line",
            _rank_sweep,
            RANK_AXES,
            finish=(_figure("rank_sweep"),),
            quick={"models": ("llama2-7b",), "ranks": ("1", "128")},
        ),
        Study(
            "ablation",
            "Regulariser ablation: LLaMA-2-7B on MetaMathQA and DeBERTa-v3-base on GLUE",
            _ablation,
            {
                "nlg_model": ("llama2-7b",),
                "variants": ("noreg", "consistency", "diversity", "svd", "all"),
                "glue_tasks": GLUE_TASKS,
                "nlu_model": ("deberta-v3-base",),
            },
            finish=(_table("ablation", "ablation_glue"), _figure("ablation", "ablation_glue")),
            quick={"glue_tasks": ("rte", "stsb")},
        ),
        Study(
            "glue",
            "GLUE grid of one model (default DeBERTa-v3-base; models=minilm: the CPU mini table's tasks)",
            _glue("nlu"),
            {"models": ("deberta-v3-base",), "tasks": (), "methods": GLUE_METHODS},
            quick={"tasks": QUICK_GLUE_TASKS},
        ),
        Study(
            "tsne",
            "t-SNE of MNLI validation features, LoRA vs BA-LoRA, BERT-large and GPT-2-XL",
            _tsne("tsne", dump=False),
            TSNE_AXES,
            finish=tsne_finish("tsne", "{results}/figures", None, TSNE_AXES),
        ),
        Study(
            "ablation_llms",
            "Regulariser ablation on LLaMA-2-7B, Mistral-7B, Gemma-7B (MetaMathQA → GSM8K, MATH)",
            _ablation_llms,
            {"models": NLG_AXES["models"], "variants": ("noreg", "consistency", "diversity", "svd", "all")},
            finish=(_table("ablation"),),
            quick={"models": ("llama2-7b",)},
        ),
        Study(
            "lora_reg",
            "LoRA + Reg: the regularisers on standard LoRA initialisation",
            _lora_reg,
            {"models": NLG_AXES["models"], "subsets": ("metamath",), "preset": ("iclr2026",)},
            quick={"models": ("llama2-7b",)},
        ),
        Study(
            "lambda_sensitivity",
            "λ sensitivity: one λ scaled by 1/4, 1/2, 2, 4 (LLaMA-2-7B, MetaMathQA)",
            _lambda_sensitivity,
            {
                "models": ("llama2-7b",),
                "terms": ("consistency", "diversity", "svd"),
                "scales": ("0.25", "0.5", "2", "4"),
            },
        ),
        Study(
            "glue_large_models",
            "BERT-large and GPT-2-XL, LoRA vs BA-LoRA on the eight GLUE tasks",
            _glue("glue_large"),
            {"models": ("bert-large", "gpt2-xl"), "tasks": GLUE_TASKS, "methods": ("lora", "ba-lora")},
            quick={"tasks": QUICK_GLUE_TASKS},
        ),
        Study(
            "nlu_diversity",
            "NLU diversity term on MNLI: entropy form vs the NLU table's covariance form and LoRA",
            _nlu_diversity,
            {"task": ("mnli",), "model": ("deberta-v3-base",)},
            finish=(_table("nlu_diversity"),),
        ),
        Study(
            "noisy_probe",
            "Noisy-pretraining probe: PiSSA vs BA-LoRA on RoBERTa-base and T5-base",
            _glue("noisy_probe"),
            {
                "models": ("roberta-base", "t5-base"),
                "tasks": ("cola", "mrpc", "rte", "stsb"),
                "methods": ("pissa", "ba-lora"),
            },
            finish=(_table("noisy_probe"),),
            quick={"tasks": ("rte", "stsb")},
        ),
        Study(
            "imbalanced_mnli",
            "Imbalanced MNLI: the contradiction class kept at 1/19 (LoRA, PiSSA, BA-LoRA on DeBERTa-v3-base)",
            _imbalanced_mnli,
            {
                "minority_class": ("contradiction",),
                "ratio": ("19",),
                "methods": ("lora", "pissa", "ba-lora"),
                "model": ("deberta-v3-base",),
            },
            finish=(_table("imbalanced_mnli"),),
        ),
        Study(
            "tsne_steps",
            "t-SNE over training steps: MNLI features of BERT-large and GPT-2-XL every 2,000 steps",
            _tsne("tsne_steps", dump=True),
            TSNE_STEPS_AXES,
            seeds=(42,),
            rehearse=TSNE_STEPS_REHEARSE,
            check=_check_tsne_steps,
        ),
        Study(
            "model_range",
            "BA-LoRA across models: LoRA, PiSSA, BA-LoRA on MetaMathQA (GSM8K) and CodeFeedback (HumanEval)",
            _model_range,
            {
                "models": (
                    "llama2-7b",
                    "llama2-13b",
                    "llama3-8b",
                    "llama3-70b",
                    "mistral-7b",
                    "gemma-7b",
                    "qwen1.5-7b",
                    "yi1.5-34b",
                ),
                "methods": ("lora", "pissa", "ba-lora"),
                "subsets": ("metamath", "python"),
            },  # fmt: skip
            finish=(_table("model_range", paper=False),),
            quick={"models": ("llama2-7b",)},
        ),
        Study(
            "mini",
            "CPU mini-reproduction: SmolLM2 (GSM8K) and MiniLM (GLUE) main tables, rank sweep, ablation",
            _mini,
            MINI_AXES,
            finish=MINI_FINISH,
        ),
        Study(
            "mini_probes",
            "The bias claims at mini scale: imbalance, label noise, λ scale, LoRA + Reg; the mini sweeps at 3 seeds",
            _mini_probes,
            {
                "probes": ("imbalance", "noise", "lambda", "lora_reg", "seeds"),
                "methods": ("lora", "pissa", "ba-lora"),
                "minority_class": ("positive",),
                "imbalance_ratios": ("4", "19", "49"),
                "noise_percents": ("20", "40"),
                "lambda_scales": ("0.1", "10", "100"),
                "lora_reg_tasks": ("gsm8k", "sst2", "cola", "mrpc", "rte"),
                "nlg_benches": ("gsm8k", "gsm8k_nll"),
                "full_ft": ("0",),  # 1: the seeds part adds Full FT of SmolLM2
            },
            finish=MINI_FINISH
            + (
                _table(
                    "mini_imbalance",
                    "mini_label_noise",
                    "mini_lambda_scale",
                    "mini_lora_reg",
                    "mini_probes_dev_paired",
                    "mini_probes_nll_paired",
                    paper=False,
                    out="{results}/mini/tables",
                ),
                _figure(
                    "mini_imbalance", "mini_label_noise", "mini_lambda_scale", out="{results}/mini/figures"
                ),
            ),  # fmt: skip
        ),
        Study(
            "tiny",
            "Smoke run: a tiny random LLaMA trained 6 steps on embedded arithmetic, scored by the GSM8K NLL",
            _tiny,
            {"max_steps": ("6",), "save_steps": ("2",)},
            seeds=(42,),
            rehearse={"max_steps": ("2",), "save_steps": ("1",)},
        ),
    ]
    return studies


# Registry order decides which study trains a run that several share: the main tables first.
STUDIES: dict[str, Study] = {s.name: s for s in _study_list()}
# The rehearsal order of scripts/rehearse.sh (every paper study; the mini studies have their own scale).
REHEARSAL_ORDER = (
    "nlg_table", "ba-lora", "loss_curves", "rank_sweep", "ablation", "nlu_table", "glue", "tsne",
    "ablation_llms", "lora_reg", "lambda_sensitivity", "glue_large_models", "nlu_diversity", "noisy_probe",
    "imbalanced_mnli", "tsne_steps", "model_range",
)  # fmt: skip


def study_finish(study: Study, rehearse: bool, quick: bool, overrides: Axes | None = None):
    """The finish commands of a study; those that depend on the axes (t-SNE figures) follow them."""
    if study.name in ("tsne", "tsne_steps"):
        a = study.axes_for(rehearse, quick, overrides)
        fig = "{results}/figures" if study.name == "tsne" else "{results}/figures/tsne_steps"
        return tsne_finish(study.name, fig, a["steps"] if study.name == "tsne_steps" else None, a)
    return study.finish


# --- configs/: generated from the recipes, checked against the grids ------------------------------------
# Every config a study plans is generated: configs/glue/ from balora/repro/glue_configs.py, configs/nlg/
# and configs/mini/ (and the quick start's, configs/smollm2/) from balora/repro/nlg_configs.py (each value
# in a small flat dict of its model, data set, method or recipe, with its source). `--write-configs` rewrites them; `--check` (and
# tests/test_studies.py) fails on a file edited by hand. A user who wants another λ copies one out of
# configs/ or passes the flag (--lambda_svd 0): the files here stay what the registry says.

# The configs written by hand, and why: each is a one-off tied to one use (the smoke run and the tests,
# the GPU check), so a generator would hold no more than the file does.
HAND_WRITTEN_CONFIGS = {
    "configs/tiny/nlg.yaml": "the smoke study (tiny) and the tests: a 6-step random-model run, one file",
    "configs/gpu/smollm2_gsm8k_ba-lora_zero2.yaml": "scripts/gpu_check.sh (not a study): a one-GPU check",
    "configs/gpu/smollm2_gsm8k_pissa_zero2.yaml": "scripts/gpu_check.sh (not a study): a one-GPU check",
}
# Generated, but run by a command of its own rather than by a study.
GENERATED_FOR_NO_STUDY = {
    "configs/smollm2/arithmetic.yaml": "balora-quickstart (quickstart.py): the methods differ by flags",
}
CONFIGS_DIR = REPO_ROOT / "configs"
REGENERATE = (
    "run: python -m balora.repro.studies --write-configs   (the values live in balora/repro/nlg_configs.py "
    "and balora/repro/glue_configs.py: change them there, not in a generated file)"
)


def generated_configs() -> dict[str, str]:
    """Every generated config, as repository-relative path ("configs/...") -> YAML text."""
    from balora.repro import glue_configs, nlg_configs

    out = {f"configs/glue/{name}": text for name, text in glue_configs.render_all().items()}
    out.update(nlg_configs.render_all())
    return out


def _committed(configs_dir: Path) -> set[str]:
    return {f"configs/{p.relative_to(configs_dir)}" for p in configs_dir.rglob("*.yaml")}


def _on_disk(configs_dir: Path, config: str) -> Path:
    return configs_dir / Path(config).relative_to("configs")


def check_generated(configs_dir: Path = CONFIGS_DIR, generated: dict[str, str] | None = None) -> list[str]:
    """Problems of the committed configs against the generators: a generated config missing or not what
    its generator writes (edited by hand, or a recipe changed and not rewritten), a config that is neither
    generated nor in HAND_WRITTEN_CONFIGS."""
    generated = generated_configs() if generated is None else generated
    committed = _committed(configs_dir)
    problems = []
    for config, text in sorted(generated.items()):
        path = _on_disk(configs_dir, config)
        if not path.is_file():
            problems.append(f"{config}: generated, missing from configs/")
            continue
        old = path.read_text()
        if old == text:
            continue
        old_lines, new_lines = old.splitlines(), text.splitlines()
        n = next(
            (i for i, pair in enumerate(zip(old_lines, new_lines, strict=False)) if pair[0] != pair[1]),
            min(len(old_lines), len(new_lines)),
        )
        here = old_lines[n] if n < len(old_lines) else "(end of file)"
        there = new_lines[n] if n < len(new_lines) else "(end of file)"
        problems.append(f"{config}: line {n + 1} is `{here}`, the generator writes `{there}`")
    problems += [
        f"{c}: neither generated nor in HAND_WRITTEN_CONFIGS (balora/repro/studies.py); a copy to try other "
        "values belongs outside configs/"
        for c in sorted(committed - set(generated) - set(HAND_WRITTEN_CONFIGS))
    ]
    problems += [
        f"{c}: in HAND_WRITTEN_CONFIGS, missing from configs/"
        for c in sorted(set(HAND_WRITTEN_CONFIGS) - committed)
    ]
    return problems


def write_configs(configs_dir: Path = CONFIGS_DIR, generated: dict[str, str] | None = None) -> int:
    """Write every generated config that differs from its file; returns how many were written."""
    written = 0
    for config, text in (generated_configs() if generated is None else generated).items():
        path = _on_disk(configs_dir, config)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written += 1
    return written


def planned_configs() -> set[str]:
    """Every config a study plans, at its default grid, under --rehearse and under --rehearse --quick."""
    found = set()
    for study in STUDIES.values():
        for settings, quick in (
            (Settings(), False),
            (Settings(rehearse=True), False),
            (Settings(rehearse=True), True),
        ):
            found.update(run.config for run in study.runs(settings=settings, quick=quick))
    return found


def check_configs(variants: tuple[tuple[str, Axes], ...] = (), configs_dir: Path = CONFIGS_DIR) -> list[str]:
    """Problems of the committed configs against the registry's grids: a planned config missing, a committed
    one no study plans (and not in HAND_WRITTEN_CONFIGS)."""
    planned = planned_configs()
    for name, axes in variants:
        planned.update(run.config for run in STUDIES[name].runs(overrides=axes))
    committed = _committed(configs_dir)
    problems = [f"{c}: planned by a study, not in configs/" for c in sorted(planned - committed)]
    problems += [
        f"{c}: in configs/, planned by no study (add it to a study's grid, or to HAND_WRITTEN_CONFIGS)"
        for c in sorted(committed - planned - set(HAND_WRITTEN_CONFIGS) - set(GENERATED_FOR_NO_STUDY))
    ]
    return problems


# Configs that a study reaches only through a --grid value (variants of the paper's recipes).
GRID_VARIANTS: tuple[tuple[str, Axes], ...] = (
    # The NLG table's BA-LoRA with constant λs (the paper text's recipe; the main rows use the schedule).
    ("nlg_table", {"methods": ("ba-lora-constant",)}),
    # The v2 NLU table's RoBERTa-large grid (LoRA's RoBERTa-large recipe), and all ten methods on MiniLM.
    ("glue", {"models": ("roberta-large",)}),
    ("glue", {"models": ("minilm",)}),
    # Full FT of SmolLM2 in the mini NLG table.
    ("mini", {"full_ft": ("1",)}),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The studies of the reproduction (balora/repro/studies.py): list them, or write / check the "
        "generated configs (configs/glue, configs/nlg, configs/mini, configs/smollm2; "
        "balora/repro/glue_configs.py, nlg_configs.py) and every config against the registry."
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--write-configs", action="store_true", help="rewrite the generated configs, then check"
    )
    group.add_argument("--check", action="store_true", help="exit 1 if a generated config differs from its "
                       "generator, or a config is missing / planned by no study / neither generated nor listed "
                       "as hand-written")  # fmt: skip
    parser.add_argument("--configs_dir", type=Path, default=CONFIGS_DIR, help="the configs folder (default: "
                        "the repository's configs/; another folder: a copy to check or write)")  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.write_configs or args.check):
        for study in STUDIES.values():
            print(f"{study.name:20s} {len(study.runs()):4d} runs  {study.doc}")
        return 0
    if not args.configs_dir.is_dir():
        parser.error(f"--configs_dir {args.configs_dir}: not a folder")
    try:
        generated = generated_configs()
    except ValueError as err:  # a planned config whose model, data set or method has no settings
        parser.error(str(err))
    if args.write_configs:
        written = write_configs(args.configs_dir, generated)
        print(f"wrote {written} of {len(generated)} generated configs to {args.configs_dir}")
    stale = check_generated(args.configs_dir, generated)
    for problem in stale:
        print(problem)
    if stale:
        print(REGENERATE)
    else:
        print(f"all {len(generated)} generated configs are up to date; "
              f"{len(HAND_WRITTEN_CONFIGS)} are written by hand (HAND_WRITTEN_CONFIGS)")  # fmt: skip
    problems = check_configs(GRID_VARIANTS, args.configs_dir)
    for problem in problems:
        print(problem)
    if not problems:
        print("every config a study plans is in configs/, and every config in configs/ belongs to a study")
    return 1 if stale or problems else 0


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    sys.exit(main())
