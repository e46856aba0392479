"""Run a study of the registry (balora/repro/studies.py): plan, stages, resume, results, tables.

    python -m balora.repro.run nlg_table --dry-run          # the plan: runs, commands, outputs, estimates
    python -m balora.repro.run nlg_table                    # run what is left, then the tables
    python -m balora.repro.run mini --only 'mini/nlu/rte_'  # a slice
    python -m balora.repro.run tsne --rehearse              # every stage at toy scale on CPU
    python -m balora.repro.run nlu_table --executor slurm --partition gpu   # one SLURM job per run

A run is a chain of stages (PiSSA init, train, each evaluation); each stage leaves a marker in the run's
outputs folder holding the fingerprint of its command and config files, so a rerun skips finished
stages, resumes the one that failed (an NLG training from its last complete checkpoint) and refuses a
stage finished with another config. A finished run (results/<run id>/DONE) is skipped. A training that
several studies share (same config, flags and seed, e.g. model_range's runs of the NLG table's models)
is trained once, in the outputs folder of the first study of the registry that has it. `touch
outputs/STOP` stops a sweep before its next run (exit status 3).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from balora.repro import provenance, stage_runner
from balora.repro.executors import Resources
from balora.repro.studies import (
    GSM8K_LIMIT,
    GSM8K_MAX_NEW_TOKENS,
    MODEL_ID,
    REHEARSAL_ORDER,
    REPO_ROOT,
    STUDIES,
    RunSpec,
    Settings,
    Study,
    config_value,
    lora_rank,
    study_finish,
)

# Per-item records copied beside the eval metrics (paired comparisons regenerate from results/).
DEFAULT_KEEP_ITEM_SCORES = "gsm8k_nll gsm8k math dev"
# The NLG models whose rehearsal trains under ZeRO-3 instead of the configs' ZeRO-2 (one per table).
REHEARSE_ZERO3_MODELS = ("gemma-7b",)
TRAIN_REHEARSE = ("--max_steps", "2", "--logging_steps", "1", "--bf16", "false", "--use_cpu", "true")
GLUE_REHEARSE = (
    "--max_train_samples", "32", "--max_eval_samples", "40", "--num_train_epochs", "1",
    "--bf16", "false", "--use_cpu", "true",
)  # fmt: skip
EVAL_REHEARSE = ("--limit", "2", "--max_new_tokens", "8", "--batch_size", "2")
# Flags that change a run's Resources, and options of the SLURM submission (balora/repro/executors.py).
RESOURCE_FLAGS = ("partition", "time_minutes", "gpus_per_node", "nodes", "mem_gb", "cpus_per_task")
SUBMIT_FLAGS = ("account", "qos", "constraint", "array_parallelism", "log_dir")
SLURM_ONLY = ("partition", "account", "qos", "constraint", "array_parallelism")


class UsageError(Exception):
    """Bad input: one line, exit status 2, nothing written."""


class StageError(Exception):
    """A stage failed or cannot run: exit status 1."""


# --- options ------------------------------------------------------------------------------------------


def parse_seeds(text: str) -> tuple[int, ...]:
    words = text.replace(",", " ").split()
    if not words:
        raise UsageError("--seeds: empty seed list")
    seeds = []
    for word in words:
        if not re.fullmatch(r"\d+", word):
            raise UsageError(f"--seeds: {word!r} is not a non-negative integer seed")
        if int(word) in seeds:
            raise UsageError(f"--seeds: seed {word} is listed twice")
        seeds.append(int(word))
    return tuple(seeds)


def parse_grid(items: list[str], study: Study) -> dict[str, tuple[str, ...]]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--grid {item!r}: expected AXIS=VALUES (e.g. models='llama2-7b mistral-7b')")
        if key not in study.axes:
            axes = ", ".join(sorted(study.axes)) or "none"
            raise UsageError(f"--grid {key}: {study.name} has no axis {key!r} (its axes: {axes})")
        values = tuple(value.replace(",", " ").split())
        if not values and study.axes[key]:
            raise UsageError(f"--grid {key}: empty value list")
        if key in overrides:
            raise UsageError(f"--grid {key}: given twice")
        overrides[key] = values
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="balora-run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "study",
        help="a study of balora/repro/studies.py: "
        + ", ".join(STUDIES)
        + " ('rehearsal [--quick] [--only STUDIES]': every paper study with --rehearse)",
    )
    parser.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="print the plan (runs, commands, outputs, estimates); run nothing",
    )
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="every stage for real at toy scale on CPU (tiny stand-ins of the paper models and "
        "datasets, balora/repro/rehearsal.py), results under outputs/rehearsal/, first seed only",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="with --rehearse: the study's quick grid (one model per table, extreme ranks)",
    )
    parser.add_argument("--seeds", help="seed list, e.g. '42 1024 2024' (default: the study's)")
    parser.add_argument("--only", help="only runs whose id <study>/<run>/seed<k> matches this regex")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="AXIS=VALUES",
        help="replace one axis of the study's grid, e.g. --grid models='llama3-8b qwen1.5-7b'",
    )
    parser.add_argument("--results_dir", help="small result files (default: results)")
    parser.add_argument("--outputs_dir", help="checkpoints and adapters, git-ignored (default: outputs)")
    parser.add_argument(
        "--no-finish", dest="finish", action="store_false", help="skip the tables and figures at the end"
    )
    parser.add_argument(
        "--executor",
        default="local",
        choices=("local", "slurm", "submitit-local"),
        help="local: one run after another here; slurm: one job per run (balora/repro/executors.py)",
    )
    parser.add_argument(
        "--gpus",
        default=os.environ.get("GPUS", "0,1,2,3,4,5,6,7"),
        help="local executor: the GPUs of a DeepSpeed training (deepspeed --include localhost:...)",
    )
    parser.add_argument("--master_port", default=os.environ.get("MASTER_PORT", "29500"))
    group = parser.add_argument_group("SLURM (--executor slurm or submitit-local)")
    group.add_argument("--partition")
    group.add_argument("--time_minutes", type=int)
    group.add_argument("--gpus_per_node", type=int)
    group.add_argument("--nodes", type=int)
    group.add_argument("--mem_gb", type=int)
    group.add_argument("--cpus_per_task", type=int)
    group.add_argument("--account")
    group.add_argument("--qos")
    group.add_argument("--constraint")
    group.add_argument("--array_parallelism", type=int, help="at most this many jobs of an array at once")
    group.add_argument("--log_dir", help="submitit's folder (default: .submitit beside the run folders)")
    return parser


@dataclass
class Options:
    study: str
    dry_run: bool = False
    rehearse: bool = False
    quick: bool = False
    seeds: tuple[int, ...] | None = None
    only: str | None = None
    grid: dict = field(default_factory=dict)
    results_dir: str = "results"
    outputs_dir: str = "outputs"
    finish: bool = True
    executor: str = "local"
    gpus: str = "0,1,2,3,4,5,6,7"
    master_port: str = "29500"
    slurm: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def options_from_args(argv: list[str]) -> Options:
    parser = build_parser()
    # argparse's own errors (unknown flag, missing value) are one line with exit status 2.
    parser.error = lambda message: _usage_exit(message)  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    if args.study not in STUDIES:
        raise UsageError(f"unknown study {args.study!r} (studies: {', '.join(STUDIES)})")
    study = STUDIES[args.study]
    if args.quick and not args.rehearse:
        raise UsageError("--quick is a rehearsal setting: pass it with --rehearse")
    if args.only is not None:
        try:
            re.compile(args.only)
        except re.error as err:
            raise UsageError(f"--only {args.only!r}: not a regular expression ({err})") from err
    if not re.fullmatch(r"\d+", args.master_port):
        raise UsageError(f"--master_port {args.master_port!r}: not a port number")
    if not re.fullmatch(r"\d+(,\d+)*", args.gpus):
        raise UsageError(f"--gpus {args.gpus!r}: expected GPU indices like 0,1,2,3")
    slurm = {k: getattr(args, k) for k in (*RESOURCE_FLAGS, *SUBMIT_FLAGS) if getattr(args, k) is not None}
    if args.executor == "local" and slurm:
        flags = ", ".join(f"--{k}" for k in slurm)
        raise UsageError(f"{flags}: SLURM options need --executor slurm (or submitit-local)")
    if args.executor == "submitit-local" and any(k in SLURM_ONLY for k in slurm):
        flags = ", ".join(f"--{k}" for k in slurm if k in SLURM_ONLY)
        raise UsageError(f"{flags}: SLURM options need --executor slurm")
    for key, value in slurm.items():
        if isinstance(value, int) and value <= 0:
            raise UsageError(f"--{key} {value}: must be positive")
    # Grid variables of the bash scripts (MODELS=... bash scripts/x.sh) no longer choose the grid: refuse
    # them rather than run the default grid in their place.
    for name in ("seeds", *study.axes):
        if os.environ.get(name.upper()):
            flag = "--seeds" if name == "seeds" else f"--grid {name}=..."
            raise UsageError(
                f"{name.upper()} is set in the environment: choose it with {flag} (then unset it)"
            )
    grid = parse_grid(args.grid, study)
    if study.check:
        problem = study.check(study.axes_for(args.rehearse, args.quick, grid))
        if problem:
            raise UsageError(f"{study.name}: {problem}")
    env_results, env_outputs = (
        os.environ.get("RESULTS_DIR") or "results",
        os.environ.get("OUTPUTS_DIR") or "outputs",
    )
    results_dir = args.results_dir or ("outputs/rehearsal/results" if args.rehearse else env_results)
    outputs_dir = args.outputs_dir or ("outputs/rehearsal/outputs" if args.rehearse else env_outputs)
    return Options(
        study=args.study,
        dry_run=args.dry_run,
        rehearse=args.rehearse,
        quick=args.quick,
        seeds=parse_seeds(args.seeds) if args.seeds is not None else None,
        only=args.only,
        grid=grid,
        results_dir=results_dir,
        outputs_dir=outputs_dir,
        finish=args.finish,
        executor=args.executor,
        gpus=args.gpus,
        master_port=args.master_port,
        slurm=slurm,
    )


def _usage_exit(message: str):
    raise UsageError(message)


# --- the plan -----------------------------------------------------------------------------------------


def python_cmd() -> str:
    if os.environ.get("PY"):
        return os.environ["PY"]
    return ".venv/bin/python" if (REPO_ROOT / ".venv" / "bin" / "python").exists() else "python"


def settings_for(opts: Options) -> Settings:
    glue_dir = os.environ.get("GLUE_DIR", "")
    return Settings(
        rehearse=opts.rehearse, data_dir=os.environ.get("BALORA_DATA_DIR", "data"), glue_dir=glue_dir
    )


def study_runs(study: Study, opts: Options, seeds: tuple[int, ...] | None = None) -> list[RunSpec]:
    return study.runs(
        seeds if seeds is not None else opts.seeds,
        settings=settings_for(opts),
        quick=opts.quick,
        overrides=opts.grid if study.name == opts.study else None,
    )


@dataclass
class Stage:
    name: str
    argv: list[str]
    marker_dir: str  # where .stage_<name>.{started,done} live
    output_dir: str
    resumable: bool = False  # an NLG training: resumes from its last complete checkpoint
    env: dict = field(default_factory=dict)


@dataclass
class PlannedRun:
    spec: RunSpec
    run_out: str
    train_out: str  # the outputs folder of the run that trains (another study's when shared)
    res: str
    stages: list[Stage]
    benches: list[tuple[str, str]]  # (bench, eval output folder) copied to eval/<bench>.json
    shared_with: str | None = None

    @property
    def run_id(self) -> str:
        return self.spec.run_id


class Planner:
    """Turns a study's runs into stage commands (the same commands the bash scripts launched)."""

    def __init__(self, opts: Options, launch_prefix=None):
        self.opts = opts
        self.py = python_cmd()
        self.data_dir = os.environ.get("BALORA_DATA_DIR", "data")
        self.eval_data_dir = os.environ.get("EVAL_DATA_DIR", "")
        self.eval_extra = tuple(os.environ.get("EVAL_EXTRA", "").split())
        self.launch_prefix = launch_prefix  # Resources -> argv (SLURM jobs), None: local
        self._owners: dict[str, str] | None = None

    # the training a run shares with an earlier study of the registry
    def train_key(self, spec: RunSpec) -> str:
        return json.dumps(
            [spec.kind, spec.model, spec.method, spec.config, spec.flags, spec.seed, spec.glue_dir]
        )

    def owner(self, spec: RunSpec) -> str:
        if self._owners is None:
            self._owners = {}
            order = list(STUDIES)
            upto = order.index(self.opts.study) if self.opts.study in order else len(order)
            for name in order[: upto + 1]:
                if name == "tiny":
                    continue
                seeds = None if name == self.opts.study else tuple(sorted(self._seeds_for_owner()))
                for other in study_runs(STUDIES[name], self.opts, seeds):
                    self._owners.setdefault(self.train_key(other), other.run_id)
        return self._owners.get(self.train_key(spec), spec.run_id)

    def _seeds_for_owner(self) -> tuple[int, ...]:
        study = STUDIES[self.opts.study]
        if self.opts.seeds:
            return self.opts.seeds
        return study.seeds[:1] if self.opts.rehearse else study.seeds

    def eval_args(self, spec: RunSpec, bench: str) -> list[str]:
        def data(rel: str) -> list[str]:
            return ["--data", f"{self.eval_data_dir}/{rel}"] if self.eval_data_dir else []

        if spec.eval_profile == "tiny":  # the smoke run: 4 problems
            return ["--data", f"{self.data_dir}/gsm8k/test.jsonl", "--limit", "4"]
        if spec.eval_profile == "mini":
            test = ["--data", f"{self.data_dir}/gsm8k/test.jsonl", "--limit", str(GSM8K_LIMIT)]
            if bench == "gsm8k":
                return test + ["--max_new_tokens", str(GSM8K_MAX_NEW_TOKENS), "--batch_size", "16"]
            return test
        gen = ["--max_new_tokens", "1024"]
        if bench == "math":
            if self.opts.rehearse:
                return data("math/test.jsonl") + gen
            return ["--data", f"{self.eval_data_dir or self.data_dir}/math/test.jsonl"] + gen
        args = {
            "gsm8k": data("gsm8k/test.jsonl") + gen,
            "gsm8k_nll": data("gsm8k/test.jsonl"),
            "humaneval": gen,
            "mbpp": data("mbpp/MbppPlus.jsonl") + gen,
            "mt_bench": data("mt_bench/question.jsonl") + gen,
        }[bench]
        if bench == "mt_bench" and self.opts.rehearse:
            args += [
                "--judge_prompts", "tests/fixtures/eval/mt_bench_judge_prompts.jsonl",
                "--reference_answers", "tests/fixtures/eval/mt_bench_reference.jsonl",
            ]  # fmt: skip
        return args

    def launcher(self, spec: RunSpec) -> list[str]:
        if spec.launcher == "cpu":
            return [self.py]
        if self.opts.rehearse:  # two CPU processes (gloo): the rehearsal of a multi-GPU launch
            return [self.py, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    self.opts.master_port]  # fmt: skip
        if self.launch_prefix is not None:  # inside a SLURM job: its GPUs and nodes
            return list(self.launch_prefix(spec.resources)) or [self.py]
        return [
            "deepspeed",
            "--include",
            f"localhost:{self.opts.gpus}",
            "--master_port",
            self.opts.master_port,
        ]

    def plan(self, spec: RunSpec) -> PlannedRun:
        outputs, results = self.opts.outputs_dir, self.opts.results_dir
        run_out = f"{outputs}/{spec.run_id}"
        owner = self.owner(spec)
        train_out = f"{outputs}/{owner}"
        stages: list[Stage] = []
        benches: list[tuple[str, str]] = []
        if spec.kind == "nlg":
            train_extra = TRAIN_REHEARSE if self.opts.rehearse else ()
            extra = [*spec.flags, *train_extra]
            if self.opts.rehearse and spec.model in REHEARSE_ZERO3_MODELS:
                extra += ["--deepspeed", "configs/deepspeed/zero3.json"]
            # PiSSA-initialised methods: one decomposition per model and rank, made once on one process
            # before training (ZeRO-3 cannot decompose partitioned weights).
            method = config_method(spec)
            if method in ("pissa", "ba-lora"):
                r = lora_rank(spec.config, tuple(extra))
                init = ["--init_dir", f"{outputs}/pissa_init/{spec.model}_r{r}"]
                extra += init
                argv = [self.py, "train_nlg.py", "--config", spec.config, "--output_dir", f"{train_out}/pissa_init",
                        "--init_only", *spec.flags, *init, *train_extra, "--deepspeed", ""]  # fmt: skip
                stages.append(Stage("pissa_init", argv, train_out, f"{train_out}/pissa_init"))
            argv = [*self.launcher(spec), "train_nlg.py", "--config", spec.config, "--output_dir",
                    f"{train_out}/train", "--seed", str(spec.seed), *extra]  # fmt: skip
            stages.append(Stage("train", argv, train_out, f"{train_out}/train", resumable=True))
            if method == "full":
                target = ["--model", f"{train_out}/train/merged"]
            else:
                target = ["--model", MODEL_ID[spec.model], "--adapter", f"{train_out}/train/adapter_lora"]
            eval_extra = (*EVAL_REHEARSE, *self.eval_extra) if self.opts.rehearse else self.eval_extra
            for bench in spec.benches:
                out = f"{run_out}/eval_{bench}"
                # The NLL scorer generates nothing: it takes no --max_new_tokens.
                flags = eval_extra if bench != "gsm8k_nll" else _without(eval_extra, "--max_new_tokens")
                argv = [self.py, f"eval/{bench}.py", *target, *self.eval_args(spec, bench), *flags,
                        "--output_dir", out]  # fmt: skip
                stages.append(Stage(f"eval_{bench}", argv, run_out, out))
                benches.append((bench, out))
        else:
            data = ["--glue_dir", spec.glue_dir] if spec.glue_dir else []
            extra = GLUE_REHEARSE if self.opts.rehearse else ()
            argv = [self.py, "finetune_glue.py", "--config", spec.config, *data, "--output_dir", f"{train_out}/train",
                    "--seed", str(spec.seed), *spec.flags, *extra]  # fmt: skip
            stages.append(Stage("train", argv, train_out, f"{train_out}/train"))
            # The final model's per-item dev predictions go along as eval/dev.json, when written.
            benches.append(("dev?", f"{train_out}/train/eval_dev"))
        return PlannedRun(
            spec, run_out, train_out, f"{results}/{spec.run_id}", stages, benches,
            shared_with=owner if owner != spec.run_id else None,
        )  # fmt: skip


def _without(flags: tuple[str, ...], name: str) -> tuple[str, ...]:
    """`flags` less the flag `name` and its value."""
    i = flags.index(name) if name in flags else len(flags)
    return flags[:i] + flags[i + 2 :]


def config_method(spec: RunSpec) -> str:
    """The adapter method a run trains: a --method flag, else its config's (e.g. ba-lora for the
    *_ba-lora-constant variants)."""
    flags = list(spec.flags)
    if "--method" in flags:
        return flags[len(flags) - 1 - flags[::-1].index("--method") + 1]
    return config_value(spec.config, "method") or spec.method


def make_plan(opts: Options, planner: Planner | None = None) -> list[PlannedRun]:
    """Every run of the study (after --only), each with its stages; a grid value without a config or a
    run listed twice is refused (UsageError)."""
    study = STUDIES[opts.study]
    planner = planner or Planner(opts)
    specs = study_runs(study, opts)
    seen: set[str] = set()
    planned = []
    for spec in specs:
        if spec.run_id in seen:
            raise UsageError(f"{opts.study}: run {spec.run_id} is planned twice (check the grid values)")
        seen.add(spec.run_id)
        if opts.only and not re.search(opts.only, spec.run_id):
            continue
        if not (REPO_ROOT / spec.config).is_file():
            raise UsageError(
                f"{opts.study}: {spec.config} not found (needed by {spec.run_id}): a grid value without a config"
            )
        if spec.kind == "nlg" and spec.model not in MODEL_ID:
            raise UsageError(f"{opts.study}: model {spec.model!r} has no hub id (studies.MODEL_ID)")
        planned.append(planner.plan(spec))
    return planned


def format_cmd(argv: list[str]) -> str:
    return " ".join(bash_quote(a) for a in argv)


def bash_quote(arg: str) -> str:
    """The quoting of bash's printf %q for printable ASCII (the stage fingerprints of scripts/lib.sh)."""
    if arg == "":
        return "''"
    return re.sub(r"([^\w@%+=:./~#-])", r"\\\1", arg)


def fingerprint(argv: list[str]) -> str:
    """sha256 of the command line and of the contents of its config files (arguments naming an existing
    .yaml/.yml/.json file), the value of a stage marker."""
    text = "".join(bash_quote(a) + " " for a in argv) + "\n"
    digest = hashlib.sha256(text.encode())
    for arg in argv:
        if arg.endswith((".yaml", ".yml", ".json")) and os.path.isfile(arg):
            digest.update(f"{arg}\n".encode())
            digest.update(Path(arg).read_bytes())
    return digest.hexdigest()


def is_done(opts: Options, run: PlannedRun) -> bool:
    return (Path(opts.results_dir) / run.run_id / "DONE").is_file()


def print_plan_run(run: PlannedRun, opts: Options) -> None:
    est = run.spec.estimate_s
    print(f"[todo] {run.run_id}" + (f"  (est. {est} s)" if est else ""))
    if run.shared_with:
        print(f"    (training shared with {run.shared_with})")
    if opts.executor != "local":
        r = run_resources(run.spec, opts)
        where = f", partition {r.partition}" if r.partition else ""
        print(
            f"    (job: {r.gpus_per_node} GPUs × {r.nodes} node(s), {r.time_minutes} min, {r.cpus_per_task} CPUs{where})"
        )
    for stage in run.stages:
        print(f"    {stage.name + ':':<12s} {format_cmd(stage.argv)}")
    evals = "".join(f",eval/{b}.json" for b, _ in run.benches if not b.endswith("?"))
    print(f"    -> {run.res}/{{config.yaml,run.json,metrics.json,log_history.json{evals}}}, DONE")


def summary_line(total: int, done: int, todo: int, est: int) -> str:
    line = f"# plan: {total} runs, {done} done, {todo} to do"
    if est:
        line += f"; estimated time of the runs to do: {est} s = {est / 3600:.2f} h"
    return line


def finish_commands(opts: Options, planned: list[PlannedRun]) -> list[list[str]]:
    study = STUDIES[opts.study]
    seeds = opts.seeds or (study.seeds[:1] if opts.rehearse else study.seeds)
    values = {
        "py": python_cmd(),
        "results": opts.results_dir,
        "outputs": opts.outputs_dir,
        "seed0": str(seeds[0]),
    }
    cmds = []
    for template in study_finish(study, opts.rehearse, opts.quick, opts.grid):
        cmds.append([part.format(**values) for part in template])
    return cmds


# --- execution ----------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Judge:
    """The rehearsal's MT-Bench judge on 127.0.0.1 (scripts/rehearsal_judge.py), started once."""

    proc: subprocess.Popen | None = None
    port: str = ""

    @classmethod
    def flags(cls, py: str) -> list[str]:
        if cls.proc is None:
            port_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"balora_judge_{os.getpid()}"
            port_file.unlink(missing_ok=True)
            cls.proc = subprocess.Popen([py, "scripts/rehearsal_judge.py", "--port_file", str(port_file)])
            for _ in range(200):
                if port_file.is_file() and port_file.read_text().strip():
                    break
                time.sleep(0.1)
            cls.port = port_file.read_text().strip()
            port_file.unlink(missing_ok=True)
            os.environ["REHEARSAL_JUDGE_KEY"] = "rehearsal"
        return ["--judge_base_url", f"http://127.0.0.1:{cls.port}/v1", "--judge_model", "rehearsal-judge",
                "--judge_api_key_env", "REHEARSAL_JUDGE_KEY"]  # fmt: skip

    @classmethod
    def stop(cls) -> None:
        if cls.proc is not None:
            cls.proc.terminate()
            cls.proc.wait()
            cls.proc = None


def run_stage(stage: Stage, run_id: str, py: str, rehearse: bool) -> None:
    marker_dir = Path(stage.marker_dir)
    marker_dir.mkdir(parents=True, exist_ok=True)
    done = marker_dir / f".stage_{stage.name}.done"
    started = marker_dir / f".stage_{stage.name}.started"
    fp = fingerprint(stage.argv)
    with _stage_lock(marker_dir / f".stage_{stage.name}.lock"):
        if done.is_file():
            if done.read_text().strip() == fp:
                print(f"    {stage.name}: already done", flush=True)
                return
            # A stale stage (e.g. after a config was edited and its results folder deleted) must not be
            # reused silently: its outputs were made by another command or config.
            raise StageError(
                f"{marker_dir} holds a finished '{stage.name}' stage of {run_id} made with another command or "
                f"config file than now ({format_cmd(stage.argv)}). Delete {marker_dir} to rerun it with the "
                "current one."
            )
        out = Path(stage.output_dir)
        same_start = started.is_file() and started.read_text().strip() == fp
        # Killed after the command finished (metrics.json, written last) but before the marker was written.
        metrics = out / "metrics.json"
        if same_start and metrics.is_file() and metrics.stat().st_mtime > started.stat().st_mtime:
            print(f"    {stage.name}: finished before the interruption", flush=True)
            _write_atomic(done, fp + "\n")
            return
        argv = list(stage.argv)
        if stage.resumable and same_start:
            checkpoint = provenance.last_complete_checkpoint(out)
            if checkpoint is not None:
                print(f"    {stage.name}: resuming from {checkpoint.name}", flush=True)
                argv += ["--resume_from_checkpoint", "last"]
        if not same_start:
            _write_atomic(started, fp + "\n")
        if rehearse and stage.name == "eval_mt_bench":
            argv[-2:-2] = _Judge.flags(py)
        print(f"    {stage.name}: {format_cmd(argv)}", flush=True)
        t0 = time.monotonic()
        status, forked = run_command(argv, {**os.environ, **stage.env}, rehearse)
        if status != 0:
            raise StageError(f"{run_id}: stage {stage.name} failed (exit status {status})")
        how = "; forked from the preloaded runner" if forked else ""
        print(f"    {stage.name}: ok ({int(time.monotonic() - t0)} s{how})", flush=True)
        _write_atomic(done, fp + "\n")


def run_command(argv: list[str], env: dict[str, str], rehearse: bool) -> tuple[int, bool]:
    """A stage's (or a table's) command from the repository root: its exit status, and whether it ran
    forked from this process.

    A real run starts each stage as a fresh process: the safest (nothing carried over from the runner),
    and its ~6 s of imports are nothing against hours of training. In a rehearsal the stages are
    toy-scale and those imports dominated (~300 stages in the quick rehearsal): there a single-process
    Python stage runs in a child forked from this process, which imported the modules once
    (balora/repro/stage_runner.py)."""
    if rehearse:
        return stage_runner.run(argv, env, REPO_ROOT)
    return subprocess.run(argv, env=env, cwd=REPO_ROOT).returncode, False


@contextlib.contextmanager
def _stage_lock(path: Path):
    """One process at a time runs a stage folder (two studies' jobs sharing a training wait for each other)."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def finish_run(run: PlannedRun, py: str) -> None:
    """Copy the small files of a finished run into its results folder, then write DONE."""
    res = Path(run.res)
    res.mkdir(parents=True, exist_ok=True)
    train = Path(run.train_out) / "train"
    for name in ("config.yaml", "run.json", "metrics.json"):
        if not (train / name).is_file():
            raise StageError(
                f"{train / name} missing after training {run.run_id}; the training script must write it"
            )
        shutil.copy(train / name, res / name)
    if (train / "log_history.json").is_file():
        shutil.copy(train / "log_history.json", res / "log_history.json")
    keep = os.environ.get("KEEP_ITEM_SCORES", DEFAULT_KEEP_ITEM_SCORES).split()
    for bench, folder in run.benches:
        optional = bench.endswith("?")
        bench = bench.rstrip("?")
        metrics = Path(folder) / "metrics.json"
        if not metrics.is_file():
            if optional:
                continue
            raise StageError(f"{metrics} missing after evaluating {bench} for {run.run_id}")
        (res / "eval").mkdir(exist_ok=True)
        shutil.copy(metrics, res / "eval" / f"{bench}.json")
        samples = Path(folder) / "samples.jsonl"
        if bench in keep and samples.is_file():
            shutil.copy(samples, res / "eval" / f"{bench}.samples.jsonl")
    # Data read from another folder is recorded as data/<file> (its sha256 beside it), as with the default.
    if os.environ.get("BALORA_DATA_DIR", "data") != "data":
        subprocess.run([py, "scripts/fetch_data.py", "--rewrite-provenance", str(res)], check=True,
                       stdout=subprocess.DEVNULL, cwd=REPO_ROOT)  # fmt: skip
    _write_atomic(res / "DONE", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") + "\n")
    print(f"[ok  ] {run.run_id} -> {run.res}", flush=True)


def _stage_env(opts: Options, spec: RunSpec) -> None:
    if opts.rehearse:
        os.environ.update(BALORA_REHEARSAL="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                          TOKENIZERS_PARALLELISM="false")  # fmt: skip
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        # numpy's and scipy's BLAS would start a thread pool at import when OMP_NUM_THREADS > 1 (a user's
        # setting), and a runner with threads runs its stages as subprocesses, not forks (stage_runner).
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if spec.eval_profile != "paper" or spec.resources.gpus_per_node == 0:
        os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        os.environ.setdefault("OMP_NUM_THREADS", "2")
    if spec.kind == "glue" and spec.resources.gpus_per_node and opts.executor == "local":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", os.environ.get("GPU", "0"))


def execute(run: PlannedRun, opts: Options, py: str) -> None:
    """The chain of stages of one run, then its results folder."""
    _stage_env(opts, run.spec)
    Path(run.run_out).mkdir(parents=True, exist_ok=True)
    for stage in run.stages:
        run_stage(stage, run.run_id, py, opts.rehearse)
    finish_run(run, py)


def execute_run(study_name: str, run_id: str, options: dict) -> str:
    """Run one run of a study (its stages with skip and resume, then its results): the function a SLURM
    job calls (module level, picklable)."""
    os.chdir(REPO_ROOT)
    opts = Options(**options)
    opts.study = study_name
    launch = None
    if opts.executor != "local":
        from balora.repro import executors

        launch = executors.launch_prefix
    planner = Planner(opts, launch_prefix=launch)
    for run in make_plan(Options(**{**opts.as_dict(), "only": None}), planner):
        if run.run_id == run_id:
            if not is_done(opts, run):
                execute(run, opts, planner.py)
            return run_id
    raise StageError(f"{run_id} is not a run of {study_name}")


def submit(opts: Options, todo: list[PlannedRun]) -> int:
    """Each run still to do as one job (its chain of stages: execute_run) through balora/repro/executors.py."""
    from balora.repro import executors

    options = {**opts.as_dict(), "dry_run": False}
    jobs = [
        executors.RunJob(
            run_id=run.run_id,
            run_dir=Path(run.run_out),
            resources=run_resources(run.spec, opts),
            fn=functools.partial(execute_run, opts.study, run.run_id, options),
        )
        for run in todo
    ]
    submit_options = {k: v for k, v in opts.slurm.items() if k in SUBMIT_FLAGS or k == "partition"}
    try:
        records = executors.submit_runs(jobs, opts.executor, submit_options)
    except executors.ExecutorError as err:
        raise UsageError(str(err)) from err
    for record in records:
        note = f" ({record['message']})" if record.get("message") else ""
        print(
            f"[job ] {record['run_id']}: job {record['job_id']} {record['state'].lower()}{note}", flush=True
        )
    submitted = sum(bool(r["submitted"]) for r in records)
    print(f"# {submitted} submitted; job ids and logs in each run's outputs folder ({executors.JOBS_FILE})")
    return 0


def run_resources(spec: RunSpec, opts: Options) -> Resources:
    """A run's resources from the registry, with the flags' overrides."""
    base = dataclasses.asdict(spec.resources)
    base.update({k: v for k, v in opts.slurm.items() if k in RESOURCE_FLAGS})
    return Resources(**base)


def run_study(opts: Options) -> int:
    # An installed package: the studies' configs and scripts are not beside it.
    if not (REPO_ROOT / "configs").is_dir():
        raise UsageError(
            f"the studies run from a clone of the repository (its configs/, scripts/ and eval/), not from "
            f"the installed package in {REPO_ROOT}: clone it, pip install -e . there and run balora-run in it"
        )
    os.chdir(REPO_ROOT)
    study = STUDIES[opts.study]
    planned = make_plan(opts)
    seeds = opts.seeds or (study.seeds[:1] if opts.rehearse else study.seeds)
    if opts.rehearse:
        print(f"# rehearsal: tiny stand-ins of the paper models and datasets; results in {opts.results_dir}")
    done = [r for r in planned if is_done(opts, r)]
    todo = [r for r in planned if not is_done(opts, r)]
    est = sum(r.spec.estimate_s for r in todo)
    if opts.dry_run:
        print(f"# {opts.study} plan (dry run): seeds=[{' '.join(map(str, seeds))}] "
              f"results={opts.results_dir} outputs={opts.outputs_dir}")  # fmt: skip
        for run in planned:
            if run in done:
                print(f"[done] {run.run_id}")
            else:
                print_plan_run(run, opts)
        print(summary_line(len(planned), len(done), len(todo), est))
        if opts.finish:
            for cmd in finish_commands(opts, planned):
                print(f"# then: {format_cmd(cmd)}")
        return 0
    if opts.executor != "local":
        status = submit(opts, todo) if todo else 0  # a refused submission: one line, nothing printed before
        print(summary_line(len(planned), len(done), len(todo), est), flush=True)
        return status
    print(summary_line(len(planned), len(done), len(todo), est), flush=True)
    py = python_cmd()
    stop = Path(opts.outputs_dir) / "STOP"
    started_est = 0
    try:
        for run in planned:
            if run in done:
                print(f"[done] {run.run_id}")
                continue
            # A graceful stop between runs (a killed run is resumed by the next invocation).
            if stop.exists():
                print(f"# {stop} exists: stopped before {run.run_id}; finished runs are kept. Delete the file "
                      "and run the same command to resume.", file=sys.stderr)  # fmt: skip
                return 3
            k = todo.index(run) + 1
            note = f"; {k} of {len(todo)}"
            if est:
                left = max(est - started_est, 0)
                note += ", ~" + (f"{(left + 59) // 60} min" if left < 3600 else f"{left / 3600:.1f} h")
                note += " of estimated work left incl. this run"
            started_est += run.spec.estimate_s
            print(f"[run ] {run.run_id}  ({datetime.now().strftime('%H:%M:%S')}{note})", flush=True)
            execute(run, opts, py)
    finally:
        _Judge.stop()
    if opts.finish:
        for cmd in finish_commands(opts, planned):
            if cmd[1] == "tsne_visualization.py" and study.name.startswith("mini"):
                dirs = cmd[cmd.index("--features_dir") + 1 : cmd.index("--titles")]
                if not all((Path(d) / "features_step_final.npy").is_file() for d in dirs):
                    print(
                        f"t-SNE: features {' '.join(dirs)} not in {opts.outputs_dir} (runs not done here); skipped"
                    )
                    continue
            print(f"# {format_cmd(cmd)}", flush=True)
            if run_command(cmd, dict(os.environ), opts.rehearse)[0] != 0:
                raise StageError(f"{opts.study}: {' '.join(cmd[1:3])} failed")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rehearsal"]:
        return rehearse_all(argv[1:])
    try:
        opts = options_from_args(argv)
        return run_study(opts)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


def rehearse_all(argv: list[str] | None = None) -> int:
    """scripts/rehearse.sh: every paper study with --rehearse, in REHEARSAL_ORDER (--quick: quick grids)."""
    parser = argparse.ArgumentParser(prog="balora-run rehearsal", description=rehearse_all.__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="the studies to rehearse, e.g. 'nlg_table rank_sweep'")
    args = parser.parse_args(argv)
    names = args.only.split() if args.only else list(REHEARSAL_ORDER)
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        print(f"error: unknown study {unknown[0]!r} (studies: {', '.join(STUDIES)})", file=sys.stderr)
        return 2
    start = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        print(f"=== {name} --rehearse ({datetime.now().strftime('%H:%M:%S')})", flush=True)
        status = main([name, "--rehearse"] + (["--quick"] if args.quick else []))
        if status != 0:
            return status
        print(f"=== {name}: ok ({int(time.monotonic() - t0)} s)", flush=True)
    print(f"=== rehearsal passed: {' '.join(names)} ({int(time.monotonic() - start)} s); results in "
          "outputs/rehearsal/results")  # fmt: skip
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
