"""A transformers Trainer that adds the BA-LoRA regularisers (docs/method.md §3) and logs each term.

    L = L_task + λ1·L_consistency + λ2·L_diversity + λ3·L_svd

Shapes: B examples, T tokens, V vocabulary, C classes, N supervised rows.

* Rows: the NLG terms read the N shifted, response-only positions (the logit at t predicts token t+1; a
  row is valid where labels[t+1] != -100), found once per micro-batch and taken as chosen once per model
  (`balora.row_capture`, which also gives the hidden-space SVD term its input); NLU rows are the examples.
* The reference logits come from `balora.adapters.reference_mode` (the frozen pre-trained function),
  without gradients; λ1 > 0 needs a model from `balora.adapters.prepare_model`.
* The regularisers are per-micro-batch means whose weight must not depend on gradient accumulation.
  Where the Trainer normalises the task loss by the items of the whole optimizer step (models that
  accept `num_items_in_batch`, i.e. causal LMs) it does not divide by the accumulation steps, so the
  regulariser is divided by them here; otherwise the Trainer divides the sum itself.
* A term with λ = 0 is not part of the loss: with every λ = 0 the loss is Trainer.compute_loss's (bit for
  bit with the full head, to float rounding with the rows-only head). It is computed without gradients,
  only on the steps whose log is written (its consistency term only with a `prepare_model` reference), so
  that ablation runs log every term while the loss and the update stay unchanged.
* Logged per optimizer step at full precision, averaged over micro-batches and ranks: `task_loss`,
  `consistency_loss`, `diversity_loss`, `svd_loss` (unweighted; λ > 0 over every step since the last log,
  λ = 0 over the logged step) and the current `lambda_*`, in `trainer.state.log_history` and in
  TensorBoard (the default `report_to`) as `train/<name>`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from balora.adapters import balora_state, reference_is_partitioned, reference_mode
from balora.regularizers import TERMS, RegularizerConfig, head_gram_factor, preset, regularizer_terms
from balora.row_capture import RowCapture, choose_row_capture, supervised_rows
from balora.schedules import SCHEDULES as LAMBDA_SCHEDULES
from balora.schedules import scheduled_lambdas

logger = logging.getLogger(__name__)

PRESET_NAMES = ("none", "iclr2026", "v5")


# Every RegularizerConfig field is set by the argument of the same name, except these, whose command-line
# names say what they choose (every saved config.yaml uses them).
_ARGUMENT_NAMES = {
    "task": "regularizer_task",
    "consistency": "consistency_type",
    "diversity": "diversity_type",
    "chunk_size": "regularizer_chunk_rows",
}
# Fields a preset does not fill: the task (set by the entry script), the chunk size (memory only) and the
# eigensolver (cost only: left None unless set, so saved configs of earlier runs stay comparable with
# results.check_same_config; RegularizerConfig's default then applies).
_NOT_FROM_PRESET = ("task", "chunk_size", "svd_eigensolver")


def _config_arguments() -> dict[str, str]:
    """{RegularizerConfig field: the BALoRATrainingArguments field that sets it}."""
    return {f.name: _ARGUMENT_NAMES.get(f.name, f.name) for f in dataclasses.fields(RegularizerConfig)}


@dataclass
class BALoRATrainingArguments(TrainingArguments):
    """TrainingArguments plus the BA-LoRA regulariser hyperparameters (validated in __post_init__).

    A preset fills every field left unset (None); fields set explicitly win over the preset. Without a
    preset the λs are 0 and the term forms are RegularizerConfig's defaults. Two defaults differ from
    TrainingArguments: `output_dir` must be given (no silent ./trainer_output), and `report_to`
    defaults to TensorBoard (events under <output_dir>/runs/).
    """

    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where the run writes its checkpoints, logs and TensorBoard events (required)."},
    )
    report_to: None | str | list[str] = field(
        default=None,
        metadata={
            "help": "Integrations that receive the logs; default tensorboard (events under <output_dir>/runs/), "
            "'none' for none, 'all' for every installed one."
        },
    )
    regularizer_preset: str = field(
        default="none",
        metadata={
            "help": "none | iclr2026 | v5: the paper's reported λ and term forms (docs/method.md §3 table). v5 has "
            "the v5 forms and λ, not the v5 scale: the KL here is a per-token mean, in the v1-v5 code a "
            "per-sequence batchmean (about T times stronger at the same λ1)."
        },
    )
    regularizer_task: str = field(
        default=RegularizerConfig.task, metadata={"help": "nlg | nlu (set by the entry script)."}
    )
    lambda_consistency: float | None = field(default=None, metadata={"help": "λ1, consistency (KL) weight."})
    lambda_diversity: float | None = field(default=None, metadata={"help": "λ2, diversity weight."})
    lambda_svd: float | None = field(default=None, metadata={"help": "λ3, SVD weight."})
    consistency_type: str | None = field(default=None, metadata={"help": "kl | mse_normalized"})
    temperature: float | None = field(default=None, metadata={"help": "T of the KL consistency term."})
    diversity_type: str | None = field(default=None, metadata={"help": "topk_entropy | entropy | covariance"})
    entropy_top_k: int | None = field(default=None, metadata={"help": "K of the top-K entropy."})
    svd_top_k: int | None = field(default=None, metadata={"help": "k of the top-k singular value share."})
    svd_normalizer: str | None = field(default=None, metadata={"help": "frobenius | nuclear"})
    svd_eigensolver: str | None = field(
        default=None,
        metadata={
            "help": "eigh (full spectrum, default) | lobpcg (top-k eigenpairs only, frobenius; for large batches)."
        },
    )
    lambda_schedule: str = field(
        default="constant",
        metadata={
            "help": "constant | iclr2026 (λ1 cosine-decays to 0.1·λ1; λ2, λ3 are 0 for the first 20%% of "
            "optimizer steps, then ramp linearly over 5%%)."
        },
    )
    cache_reference_logits: bool = field(
        default=True,
        metadata={
            "help": "NLU only: keep each training example's reference logits (C floats) after its first "
            "reference forward and reuse them in later epochs (the reference is frozen and computed "
            "without dropout, so they do not change); saves the reference forward after epoch 1."
        },
    )
    rows_only_lm_head: bool = field(
        default=True,
        metadata={
            "help": "NLG training: apply the LM head to the N supervised rows only (a pre-hook narrows its "
            "input), not to every position; the task loss and the terms then use those (N, V) logits: the "
            "same loss and gradients up to float rounding, less time and memory. On where the logits are "
            "a plain linear map of the last hidden state (LLaMA, Mistral, Gemma, Qwen2/3); other models "
            "keep the full head (logged with the reason). false: the full head, whose loss is "
            "Trainer.compute_loss's bit for bit."
        },
    )
    regularizer_chunk_rows: int = field(
        default=RegularizerConfig.chunk_size,
        metadata={
            "help": "Rows (tokens) per fp32 chunk in the regularisers: bounds memory at large vocabularies."
        },
    )

    def __post_init__(self):
        if not self.output_dir:
            # TrainingArguments would write to ./trainer_output: a run's files belong where the user says.
            raise ValueError(
                "BALoRATrainingArguments needs an output directory: pass --output_dir <dir> "
                "(output_dir=... in Python)"
            )
        if self.report_to is None:
            self.report_to = ["tensorboard"]
        super().__post_init__()
        for name, allowed in (("regularizer_preset", PRESET_NAMES), ("lambda_schedule", LAMBDA_SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.regularizer_task not in ("nlg", "nlu"):
            raise ValueError(f"regularizer_task must be 'nlg' or 'nlu', got {self.regularizer_task!r}")
        default_config, default_lambdas = preset(self.regularizer_preset, self.regularizer_task)
        if self.regularizer_preset == "none":  # no preset: RegularizerConfig's forms, for either task
            default_config = RegularizerConfig(task=self.regularizer_task)
        for name, argument in _config_arguments().items():
            if name not in _NOT_FROM_PRESET and getattr(self, argument) is None:
                setattr(self, argument, getattr(default_config, name))
        for term in TERMS:
            if getattr(self, f"lambda_{term}") is None:
                setattr(self, f"lambda_{term}", float(default_lambdas[term]))
            elif getattr(self, f"lambda_{term}") < 0:
                raise ValueError(f"lambda_{term} must be >= 0, got {getattr(self, f'lambda_{term}')}")
        # Builds and validates the term configuration now, so a bad value fails before any model loads.
        self.regularizer_config()

    def regularizer_config(self) -> RegularizerConfig:
        """The RegularizerConfig of these arguments (term forms, task, chunk size, eigensolver)."""
        values = {name: getattr(self, argument) for name, argument in _config_arguments().items()}
        values["svd_eigensolver"] = values["svd_eigensolver"] or RegularizerConfig.svd_eigensolver
        return RegularizerConfig(**values)

    @property
    def regularizers_enabled(self) -> bool:
        return any(getattr(self, f"lambda_{t}") > 0 for t in TERMS)


class _AdaLoraBudgetCallback(TrainerCallback):
    """AdaLoRA reallocates ranks from the gradients after each optimizer step (peft's update_and_allocate)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        model.base_model.update_and_allocate(state.global_step)


def _fold(entries: list[tuple[float, float]]) -> tuple[float, float]:
    """(Σ sums, Σ weights) of a metric's micro-batch entries, added in order (sum() compensates since 3.12)."""
    return functools.reduce(lambda acc, entry: (acc[0] + entry[0], acc[1] + entry[1]), entries, (0.0, 0.0))


class BALoRATrainer(Trainer):
    """Trainer whose loss adds the weighted BA-LoRA regularisers; see the module docstring.

    `student_head_path` ("supervised rows" or "every position: <why>") and `svd_path` ("hidden space"
    or "logits space: <why>") say which path ran; both are logged when first decided.
    """

    # Switches for tests and benchmarks. _hidden_svd_enabled = False: the logits-space SVD term (the
    # reference formula). _tap_rows_enabled = False: rows gathered from the returned logits, not tapped.
    # _reference_first: the reference forward runs before the student's (same result, its memory is
    # then reused by the student's activations).
    _hidden_svd_enabled = True
    _tap_rows_enabled = True
    _reference_first = True
    student_head_path: str | None = None
    svd_path: str | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, BALoRATrainingArguments):
            raise TypeError("BALoRATrainer needs BALoRATrainingArguments")
        self._regularizer_config = self.args.regularizer_config()
        if self.args.regularizer_task == "nlu":
            # A peft wrapper's forward is (*args, **kwargs), so the Trainer believes the model normalises
            # its loss by `num_items_in_batch`; sequence classifiers return a plain mean, so the Trainer
            # must divide by the accumulation steps.
            self.model_accepts_loss_kwargs = False
        self._base_lambdas = {t: float(getattr(self.args, f"lambda_{t}")) for t in TERMS}
        unwrapped = self.accelerator.unwrap_model(self.model)
        partitioned = reference_is_partitioned(unwrapped)
        self._has_reference = balora_state(unwrapped) is not None and not partitioned
        if self._base_lambdas["consistency"] > 0 and partitioned:
            raise ValueError(
                "the consistency term of full fine-tuning or BitFit swaps in a copy of the initial weights, "
                "which DeepSpeed ZeRO-3 partitions: train it under ZeRO-2 (--deepspeed configs/deepspeed/zero2.json)"
            )
        if self._base_lambdas["consistency"] > 0 and not self._has_reference:
            # Under PiSSA, disabling a plain peft adapter gives the residual model, not the pre-trained
            # one: the consistency term needs the frozen reference that prepare_model attaches.
            raise ValueError(
                "BALoRATrainer with a consistency λ > 0 needs a model returned by "
                "balora.adapters.prepare_model (it attaches the frozen reference); got a "
                f"{type(self.model).__name__} prepared elsewhere (e.g. peft.get_peft_model)"
            )
        self._reference_cache: dict[bytes, torch.Tensor] = {}  # NLU: example digest -> (C,) reference logits
        # Per-term metrics since the last log, as trl's trainers keep them: name -> one (sum, weight) per
        # micro-batch, averaged across micro-batches and ranks in `log`.
        self._metrics: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._capture: tuple[torch.nn.Module, RowCapture] | None = None
        self._head_factor_cache: tuple[tuple, torch.Tensor] | None = None
        if type(getattr(unwrapped, "base_model", None)).__name__ == "AdaLoraModel":
            self.add_callback(_AdaLoraBudgetCallback(self))

    def current_lambdas(self) -> dict[str, float]:
        return scheduled_lambdas(
            self._base_lambdas, self.args.lambda_schedule, self.state.global_step, self.state.max_steps
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None, **kwargs):
        if not model.training:  # evaluation reports the task loss: the Trainer's own
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch, **kwargs)
        lambdas = self.current_lambdas()
        # Terms with λ > 0 enter the loss. Terms with λ = 0 are computed only to be logged: without
        # gradients, on the micro-batches of a step whose log is written (the loss is unchanged).
        active = [t for t in TERMS if lambdas[t] > 0]
        logged = self._logs_this_step()
        logged_only = [
            t for t in TERMS if t not in active and logged and (t != "consistency" or self._has_reference)
        ]
        capture = self._row_capture(model, return_outputs)
        rows = None if self.args.regularizer_task == "nlu" else supervised_rows(inputs.get("labels"))
        ref_logits = None
        if "consistency" in active and self._reference_first:
            # Before the student's forward: its activations then reuse the memory the reference freed.
            ref_logits = self._reference_logits(model, inputs, rows, capture)
        full_forward = functools.partial(
            super().compute_loss, model, inputs, True, num_items_in_batch=num_items_in_batch, **kwargs
        )
        loss, outputs, logits, hidden = capture.student(
            self, model, inputs, rows, num_items_in_batch, full_forward, want_rows=bool(active or logged_only)
        )
        self._record_task_loss(loss, inputs, rows, num_items_in_batch)
        if active or logged_only:
            if "consistency" in active + logged_only and ref_logits is None:
                ref_logits = self._reference_logits(model, inputs, rows, capture)
            regularizer = self._regularizer(
                logits, ref_logits, hidden, capture, lambdas, active, logged_only, num_items_in_batch
            )
            loss = loss + regularizer if active else loss  # with λ = 0 only, the Trainer's loss itself
        return (loss, outputs) if return_outputs else loss

    def _regularizer(
        self, logits, ref_logits, hidden, capture, lambdas, active, logged_only, num_items_in_batch
    ):
        """Σ λ·term over the active terms (0 when none), scaled for gradient accumulation; every
        computed term, the λ = 0 ones without gradients, recorded for the log."""
        hidden_svd = {}
        if "svd" in active + logged_only:
            path = capture.svd_space(hidden)
            if path != self.svd_path:
                logger.info("BA-LoRA SVD term computed in %s", path)
                self.svd_path = path
            if path == "hidden space":
                hidden_svd = {"hidden": hidden, "head_factor": self._head_factor(capture.svd_head)}
        regularizer, values = 0.0, {}
        if active:
            terms = regularizer_terms(
                logits, ref_logits, None, self._regularizer_config, terms=active, **hidden_svd
            )
            regularizer = sum(lambdas[t] * terms[t] for t in active)
            if self._loss_is_scaled_for_ga(num_items_in_batch):
                # The Trainer will not divide by the accumulation steps: do it for the per-micro-batch means.
                regularizer = regularizer / self.current_gradient_accumulation_steps
            values.update((t, terms[t]) for t in active)
        if logged_only:  # the rows and the hidden states are detached: no gradient, no graph kept
            with torch.no_grad():
                detached = {k: v.detach() for k, v in hidden_svd.items()}
                terms = regularizer_terms(
                    logits.detach(), ref_logits, None, self._regularizer_config, terms=logged_only, **detached
                )
            values.update((t, terms[t]) for t in logged_only)
        for t in TERMS:
            if t in values:
                self._metrics[t].append((float(values[t].detach()), 1.0))
        return regularizer

    def _row_capture(self, model, return_outputs: bool) -> RowCapture:
        """The row capture of `model`, chosen on its first step (the choice is logged with its reason)."""
        unwrapped = self.accelerator.unwrap_model(model)
        if self._capture is None or self._capture[0] is not unwrapped:
            self._capture = (unwrapped, self._choose_row_capture(unwrapped))
        capture = self._capture[1]
        if return_outputs and capture.mode == "rows-only head":  # the caller wants the (B, T, V) logits
            capture = dataclasses.replace(capture, mode="row tap" if self._tap_rows_enabled else "gather")
        return capture

    def _choose_row_capture(self, unwrapped) -> RowCapture:
        task = self.args.regularizer_task
        custom_loss = self.label_smoother is not None or self.compute_loss_func is not None
        capture, reason = choose_row_capture(
            unwrapped,
            task,
            self.args.rows_only_lm_head,
            custom_loss,
            self._tap_rows_enabled,
            self._hidden_svd_enabled,
        )
        if task == "nlg":
            self.student_head_path = "supervised rows" if reason is None else f"every position: {reason}"
            logger.info("BA-LoRA student LM head applied to %s", self.student_head_path)
        return capture

    def _logs_this_step(self) -> bool:
        """Whether the optimizer step in progress is one whose training log is written (the rule of
        transformers' DefaultFlowCallback; with epoch logging, every step, as the log is the epoch mean)."""
        step = self.state.global_step + 1  # global_step counts the steps already taken
        if step == 1 and self.args.logging_first_step:
            return True
        strategy = IntervalStrategy(self.args.logging_strategy)
        if strategy == IntervalStrategy.STEPS:
            return self.state.logging_steps > 0 and step % self.state.logging_steps == 0
        return strategy == IntervalStrategy.EPOCH

    def _head_factor(self, head: torch.nn.Linear) -> torch.Tensor:
        """L with L Lᵀ = Wᵀ W of the frozen head, computed once (again only if the weight changes)."""
        weight = head.weight
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        if self._head_factor_cache is None or self._head_factor_cache[0] != key:
            self._head_factor_cache = (key, head_gram_factor(weight))
        return self._head_factor_cache[1]

    def _reference_logits(self, model, inputs: dict, rows, capture: RowCapture) -> torch.Tensor:
        """Reference logits on the regulariser rows; NLU rows come from the per-example cache when seen."""
        use_cache = self.args.regularizer_task == "nlu" and self.args.cache_reference_logits
        keys = self._example_keys(inputs) if use_cache else None
        if keys is not None and all(k in self._reference_cache for k in keys):
            return torch.stack([self._reference_cache[k] for k in keys]).to(inputs["input_ids"].device)
        ref_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        unwrapped = self.accelerator.unwrap_model(model)
        with reference_mode(unwrapped):
            ref_logits = capture.reference(unwrapped, ref_inputs, rows)
        if keys is not None:
            for key, row in zip(keys, ref_logits.detach().float().cpu(), strict=True):
                self._reference_cache[key] = row  # (C,)
        return ref_logits

    @staticmethod
    def _example_keys(inputs: dict) -> list[bytes]:
        """A digest per example of its unpadded model inputs (padding length varies between batches)."""
        ids = inputs["input_ids"]  # (B, T)
        attention = inputs.get("attention_mask")
        keep = attention.bool() if attention is not None else torch.ones_like(ids, dtype=torch.bool)  # (B, T)
        extra = [inputs[k] for k in ("token_type_ids",) if k in inputs]
        keys = []
        for row in range(ids.shape[0]):
            digest = hashlib.sha1(ids[row][keep[row]].cpu().numpy().tobytes())
            for tensor in extra:
                digest.update(tensor[row][keep[row]].cpu().numpy().tobytes())
            keys.append(digest.digest())
        return keys

    def _loss_is_scaled_for_ga(self, num_items_in_batch) -> bool:
        if getattr(self, "loss_is_scaled_for_ga", None) is not None:
            return bool(self.loss_is_scaled_for_ga)
        return (
            bool(self.model_accepts_loss_kwargs and num_items_in_batch is not None)
            or self.compute_loss_func is not None
        )

    def _record_task_loss(self, loss: torch.Tensor, inputs: dict, rows, num_items_in_batch) -> None:
        """Record the task loss so that its per-step mean can be logged beside the terms."""
        value = float(loss.detach().float().mean())
        if self._loss_is_scaled_for_ga(num_items_in_batch):
            # loss = (token-loss sum of this micro-batch) / (items of the whole step) · world scale: log
            # the mean over the step's items.
            world = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
            labels = inputs.get("labels")
            items = rows[0].numel() if rows is not None else labels.numel() if labels is not None else 1
            self._metrics["task"].append((value * float(num_items_in_batch) / world, float(items)))
        else:
            self._metrics["task"].append((value, 1.0))

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log (evaluation logs carry eval_loss)
            names = ("task", *TERMS)
            # Every rank sends every name, in this order: one float64 (sum, weight) pair each, one collective.
            totals = torch.tensor([_fold(self._metrics[n]) for n in names], dtype=torch.float64)  # (names, 2)
            totals = totals.to(self.args.device)
            if self.accelerator.num_processes > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            for name, (total, weight) in zip(names, totals.cpu().tolist(), strict=True):
                if weight > 0:
                    logs[f"{name}_loss"] = total / weight
            for t, value in self.current_lambdas().items():
                logs[f"lambda_{t}"] = value
            self._metrics.clear()
        super().log(logs, *args, **kwargs)

    def _run_epoch(self, *args, **kwargs):
        # Resumed from the final checkpoint (killed before its results were saved): the Trainer would train a
        # step past max_steps before its stop check. The checkpoint's weights are the finished training's.
        if self.state.global_step >= self.state.max_steps > 0:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)
