"""One run lifecycle for every training command: output folder, resume, config, provenance, metrics, exit.

A command parses and checks every input (flags, YAML, data, model), then trains with the callbacks of
its `Run`; nothing is written into the output folder before training starts. Its folder then holds:

    config.yaml        the resolved config, written when training starts
    checkpoint-<N>/    the Trainer's checkpoints (a resume continues the newest complete one)
    log_history.json   the Trainer's log (per-step task loss, regulariser terms)
    run.json           provenance: git commit, package versions, seed, wall time, peak memory
    metrics.json       written last: its presence marks a finished run

A finished run is replaced only with `--overwrite_output_dir` (its metrics and checkpoints are removed
when the new run starts training, so a bad input found before loses nothing) and never resumed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from balora import adapters
from balora.cli.command import RunFailed, run_command
from balora.regularizers import TERMS
from balora.repro import provenance
from balora.repro.config import changed_keys, load_yaml_config, save_config
from balora.trainer import BALoRATrainingArguments

logger = logging.getLogger(__name__)


class TrainingDiverged(RunFailed):
    """The loss or a trained parameter became NaN or infinite: the run stops without metrics.json."""


# --- the command line ---------------------------------------------------------------------------------


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run a training command's `main(argv)` (`balora.cli.command.run_command`: 0; 2 for an input error,
    1 for a diverged run, each one line without a traceback) and end a launched process with that status."""
    return exit_launched_process(run_command(main, argv=argv, basic_logging=False))


def finish_distributed(trainer: Trainer) -> None:
    """End of a run: every rank waits for rank 0's files, then leaves the process group cleanly.

    A rank that exits while the others still use gloo/NCCL can abort ("terminate called without an
    active exception", SIGABRT), and the launcher then kills rank 0 mid-save. No-op in a single process.
    """
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def exit_launched_process(status: int) -> int:
    """A command's last call: `status` when run directly; under a launcher (torchrun, deepspeed,
    accelerate: LOCAL_RANK is set) the process ends here with `status`, skipping the interpreter's teardown.

    Why: at shutdown a gloo worker thread can still be releasing the last collective's tensors; the
    finalising interpreter ends it inside a C++ destructor and std::terminate aborts the rank, which the
    launcher reports as a failed run. By this call every file is written and the process group is left.
    """
    if "LOCAL_RANK" not in os.environ:
        return status
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# --- what a run trains ---------------------------------------------------------------------------


def skip_unused_deepspeed_cpu_kernel(args: BALoRATrainingArguments) -> None:
    """DeepSpeed on CPU compiles its shared-memory all-reduce kernel when it starts (~30 s with two cores,
    once per environment). Only its tensor-parallel inference (`inference_all_reduce`) uses that kernel; ZeRO
    training reduces through torch.distributed (gloo), so it is marked unavailable and not built."""
    if args.deepspeed and not torch.cuda.is_available():
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def resolve_method(method: str, args: BALoRATrainingArguments) -> dict:
    """What a run trains, from its `method` and its regulariser settings (the one rule of every command).

    The rule: `method` chooses the adapter and its initialisation (a recipe such as ba-lora names its
    adapter, `adapters.RECIPES`); the regularisers are switched on by the λs alone (a
    `regularizer_preset` or explicit `lambda_*` flags), for any adapter. A recipe needs a preset (or a
    λ), and a preset with every λ set to 0 is the paper's "w/o reg" ablation, i.e. the recipe's adapter
    trained by the same pipeline. `pissa` (or `lora`, ...) with a λ > 0 runs the regularisers too (PiSSA
    + reg is BA-LoRA; LoRA + reg is the paper's "LoRA + Reg"): allowed, logged, and recorded as what it is.

    Returns:
        {"method": as configured, "adapter_method": the adapter built ("pissa" for ba-lora),
         "regularized": any λ > 0, "trained": the name of what ran ("ba-lora", "pissa", "lora+reg", ...)}.

    Raises:
        ValueError: a recipe with neither a preset nor a λ (nothing says which regularisers to use).
    """
    regularized = args.regularizers_enabled
    adapter = adapters.adapter_of(method)
    if method in adapters.RECIPES and not regularized and args.regularizer_preset == "none":
        raise ValueError(
            f"method {method} = {adapters.RECIPES[method].description}: set regularizer_preset (iclr2026 | "
            f"v5) or a lambda_* > 0 (a preset with every λ set to 0 is the 'w/o reg' ablation); for plain "
            f"{adapter} use method {adapter}"
        )
    # An adapter trained with the regularisers is recorded under the recipe of that adapter (PiSSA + reg
    # is BA-LoRA, whichever name the run was launched with), else as "<adapter>+reg".
    recipe = next((name for name, r in adapters.RECIPES.items() if r.adapter == adapter), None)
    trained = (recipe or f"{adapter}+reg") if regularized else adapter
    if trained != method:
        lambdas = ", ".join(f"λ_{t} = {getattr(args, f'lambda_{t}'):g}" for t in TERMS)
        logger.warning("method %s with %s is recorded as trained: %s", method, lambdas, trained)
    return {"method": method, "adapter_method": adapter, "regularized": regularized, "trained": trained}


def warn_if_regularizers_with_full_ft(method: str, args: BALoRATrainingArguments) -> None:
    """Full FT has no regulariser in the paper; with them the reference is a full frozen copy (2× weights)."""
    if method == "full" and args.regularizers_enabled:
        warnings.warn(
            "Regularisers with full fine-tuning keep a frozen copy of all weights as the reference "
            "(2× weight memory); the paper's full-FT rows use no regulariser.",
            stacklevel=2,
        )


# --- hyperparameters ----------------------------------------------------------------------------------


def check_training_arguments(args) -> None:
    """Ranges of the TrainingArguments a run depends on (finiteness is checked by `parse_args`).

    Raises:
        ValueError: naming the flag and its allowed range.
    """
    checks = {
        "learning_rate": args.learning_rate > 0,
        "weight_decay": args.weight_decay >= 0,
        "max_grad_norm": args.max_grad_norm >= 0,
        "num_train_epochs": args.num_train_epochs > 0 or (args.num_train_epochs == 0 and args.max_steps > 0),
        "warmup_steps": args.warmup_steps >= 0,
        "per_device_train_batch_size": args.per_device_train_batch_size >= 1,
        "per_device_eval_batch_size": args.per_device_eval_batch_size >= 1,
        "gradient_accumulation_steps": args.gradient_accumulation_steps >= 1,
        "adam_beta1": 0 <= args.adam_beta1 < 1,
        "adam_beta2": 0 <= args.adam_beta2 < 1,
        "adam_epsilon": args.adam_epsilon >= 0,
        "seed": 0 <= args.seed < 2**32,
        **{f"lambda_{t}": getattr(args, f"lambda_{t}") >= 0 for t in TERMS},
    }
    ranges = {
        "learning_rate": "> 0",
        "num_train_epochs": "> 0 (or 0 with --max_steps)",
        "per_device_train_batch_size": ">= 1",
        "per_device_eval_batch_size": ">= 1",
        "gradient_accumulation_steps": ">= 1",
        "adam_beta1": "in [0, 1)",
        "adam_beta2": "in [0, 1)",
        "seed": "in [0, 2**32)",
    }
    for name, ok in checks.items():
        if not ok:
            raise ValueError(f"--{name} must be {ranges.get(name, '>= 0')}, got {getattr(args, name)}")


@contextlib.contextmanager
def loading_model(name: str) -> Iterator[None]:
    """Turn transformers' OSError for a model that is neither a local folder nor reachable on the hub
    (offline, a typo, no access) into a one-line input error naming the flag."""
    try:
        yield
    except OSError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"--model_name_or_path {name}: cannot be loaded ({reason}); give a local folder, an embedded "
            f"model name or a hub id in the local cache"
        ) from error


# --- the output folder --------------------------------------------------------------------------------


def check_writable(output_dir: Path) -> None:
    """The folder exists and is writable, or can be created: checked without creating or writing anything.

    Raises:
        ValueError: naming the folder and why it cannot be written.
    """
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = f"{existing} is a file" if existing != output_dir else "it is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"no write permission on {existing}"
    else:
        return
    raise ValueError(
        f"output directory {output_dir} cannot be written ({reason}); choose another --output_dir"
    )


def check_output_dir(output_dir: Path, overwrite: bool, resume: str | None) -> None:
    """Refuse to replace a finished run (metrics.json) unless asked, and to resume one at all; the folder
    must be writable. Writes nothing."""
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
    check_writable(output_dir)


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


def resolve_resume(output_dir: Path, resume: str | None, config: dict) -> str | None:
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


def train_loss_over_run(
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


# --- during training ----------------------------------------------------------------------------------


class _StartRunFolder(TrainerCallback):
    """At the start of training (every input checked by then): a run that does not resume removes the
    metrics, log and checkpoints of the run it replaces (so that neither marks it finished nor is picked by
    a later `--resume_from_checkpoint last`), and the resolved config.yaml is written.

    With `log_at_checkpoints`, the loss is logged at every checkpoint step before the save, so that a
    checkpoint's log history covers every step up to it: a resumed run's whole-run train_loss uses it.
    """

    def __init__(self, run: Run):
        self.run = run

    def on_train_begin(self, args, state, control, **kwargs):
        if not args.should_save:
            return
        output_dir = self.run.output_dir
        if not self.run.checkpoint:
            stale = [p for p in (output_dir / "metrics.json", output_dir / "log_history.json") if p.exists()]
            stale += provenance.checkpoints(output_dir)
            if stale:
                logger.warning(
                    "Replacing the earlier run in %s: removing %s", output_dir, [p.name for p in stale]
                )
            for path in stale:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        provenance.ensure_writable(output_dir)
        save_config(output_dir / "config.yaml", self.run.config)

    def on_step_end(self, args, state, control, **kwargs):
        if self.run.log_at_checkpoints and control.should_save:
            control.should_log = True
        return control

    on_epoch_end = on_step_end  # save_strategy "epoch" decides to save here


class StopOnNonFinite(TrainerCallback):
    """Stop the run when a logged loss or a trained parameter is NaN or infinite (TrainingDiverged).

    The Trainer's `logging_nan_inf_filter` hides a non-finite step loss from the logged average, so the
    parameters are checked too, after every optimizer step (one reduction per tensor, one host sync; with
    several processes one collective): a diverged run must not end in a metrics.json that looks like a
    finished one.
    """

    def __init__(self, model: torch.nn.Module):
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def on_step_end(self, args, state, control, **kwargs):
        # Under ZeRO-3 a parameter is a placeholder and its shard is `ds_tensor`.
        tensors = [getattr(p, "ds_tensor", p).detach() for _, p in self.named]
        if tensors:
            finite = torch.stack([t.isfinite().all() for t in tensors])
            if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
                # Under ZeRO-3 each rank sees only its shards: every rank stops, or the others would wait
                # for it in their next collective.
                flags = finite.to(torch.int32)
                torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
                finite = flags.bool()
            if not bool(finite.all()):
                name = self.named[int((~finite).nonzero()[0])][0]
                raise TrainingDiverged(
                    f"training diverged at step {state.global_step}: parameter {name} is NaN or infinite "
                    f"(learning rate {args.learning_rate:g}); lower --learning_rate or the λs. No metrics.json "
                    f"was written."
                )
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if key.endswith("loss") and isinstance(value, float) and not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged at step {state.global_step}: {key} = {value} "
                    f"(learning rate {args.learning_rate:g}); lower --learning_rate or the λs. No "
                    f"metrics.json was written."
                )


# --- the run --------------------------------------------------------------------------------------------


class Run:
    """One training run: checks its output folder and resume on creation (writing nothing), gives the
    Trainer the callbacks that start the folder and stop a diverged run, and writes the results last.

    Args:
        output_dir: the run folder.
        config: the resolved config (written to config.yaml when training starts).
        overwrite: --overwrite_output_dir.
        resume: --resume_from_checkpoint as given (None: a new run).
        log_at_checkpoints: log the loss at every checkpoint step (for a resumed run's whole-run loss).
    """

    def __init__(
        self,
        output_dir: str | Path,
        config: dict[str, Any],
        *,
        overwrite: bool,
        resume: str | None = None,
        log_at_checkpoints: bool = True,
    ):
        self.start_time = time.time()
        self.output_dir, self.config = Path(output_dir), config
        self.log_at_checkpoints = log_at_checkpoints
        check_output_dir(self.output_dir, overwrite, resume)
        self.checkpoint = resolve_resume(self.output_dir, resume, config)
        # Global step of the checkpoint this run resumes from (0: a new run), read now: with
        # save_total_limit the Trainer may delete that checkpoint before the run ends.
        state = Path(self.checkpoint) / "trainer_state.json" if self.checkpoint else None
        self.resumed_at = json.loads(state.read_text())["global_step"] if state else 0

    def callbacks(self, model: torch.nn.Module) -> list[TrainerCallback]:
        """The Trainer callbacks of the run: start the folder, stop on a non-finite loss or parameter."""
        return [_StartRunFolder(self), StopOnNonFinite(model)]

    def finish(self, trainer: Trainer, metrics: dict[str, Any], seed: int, extra: dict[str, Any]) -> None:
        """Write log_history.json, run.json (provenance + `extra`) and, last, metrics.json (rank 0 only)."""
        if not trainer.is_world_process_zero():
            return
        provenance.write_json(self.output_dir / "log_history.json", trainer.state.log_history)
        provenance.write_json(
            self.output_dir / "run.json", provenance.collect(seed, self.start_time, extra=extra)
        )
        provenance.write_json(self.output_dir / "metrics.json", metrics)  # last: marks the run finished
