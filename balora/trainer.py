"""A transformers Trainer that adds the BA-LoRA regularisers (docs/method.md §3) and logs each term.

    L = L_task + λ1·L_consistency + λ2·L_diversity + λ3·L_svd

Shapes: B examples, T tokens, V vocabulary, H hidden size, C classes, N supervised rows.

* NLG: the terms are computed on the N shifted, response-only positions: the logit at t predicts token
  t+1 and a row is valid where labels[t+1] != -100 (the task loss's rows). They are found once per
  micro-batch and taken as one (1, N, V) tensor, so the terms' backward writes N×V gradients, not B×T×V
  ones. How the student's forward yields them is chosen once per model (`_RowCapture`; costs in
  benchmarks/README.md):
  - "rows-only head" (`rows_only_lm_head`, on by default) where the logits are a plain linear map of
    the last hidden state (`_ROWS_ONLY_HEAD_MODEL_TYPES`): a pre-hook narrows the LM head's input to the
    N rows and the task loss is the causal-LM cross-entropy on them, so no B×T×V logits are made. The
    same loss as Trainer.compute_loss up to float rounding (the head's matmul has another shape).
  - "row tap", the same models with the full head: `_RowsTap` takes the rows at the head's output and
    adds their gradient to the task loss's at the N rows, bit-identical to a gather and without
    autograd's B×T×V zeros-and-sum.
  - "gather", any other model: the rows are gathered from the returned logits.
  The reference applies its LM head to the N rows only wherever the logits are such a linear map.
* NLU: the rows are the examples, the columns the classes (1 for regression).
* The SVD term runs in hidden space where the logits are a frozen, bias-free linear map Z = H Wᵀ of the
  LM head's input H (exact: σ(Z) = σ(H L) with L Lᵀ = Wᵀ W; `balora.regularizers.svd_loss_hidden`):
  H comes from the student's own forward. `svd_path` and the log say which space ran.
* The reference logits come from `balora.adapters.reference_mode` (the frozen pre-trained function),
  computed without gradients; the model must come from `balora.adapters.prepare_model` when λ1 > 0.
* The regularisers are per-micro-batch means. Their weight must not depend on gradient accumulation:
  when the Trainer normalises the task loss by the number of items of the whole optimizer step (models
  that accept `num_items_in_batch`, i.e. causal LMs), it does NOT divide by the accumulation steps, so
  the regulariser is divided by them here; otherwise the Trainer divides the sum by them itself.
* A term with λ = 0 is not part of the loss: with every λ = 0 the loss is Trainer.compute_loss's (bit
  for bit with the full head, to float rounding with the rows-only head). It is computed only on the
  steps whose training log is written, without gradients, so that ablation runs log every term while
  the loss and the update stay unchanged; the other steps skip it (and the reference forward when
  λ1 = 0). Its consistency term needs the reference (a `prepare_model` model).
* Logged per optimizer step, at full precision (averaged over micro-batches and across ranks):
  `task_loss`, `consistency_loss`, `diversity_loss`, `svd_loss` (unweighted; a term with λ > 0 averaged
  over every step since the last log, one with λ = 0 over the logged step) and the current `lambda_*`.
  They go to `trainer.state.log_history` and to TensorBoard (the default `report_to`) as `train/<name>`.
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

from balora.adapters import balora_state, reference_mode
from balora.regularizers import TERMS, RegularizerConfig, head_gram_factor, preset, regularizer_terms
from balora.schedules import SCHEDULES as LAMBDA_SCHEDULES
from balora.schedules import lambda_factors

logger = logging.getLogger(__name__)

PRESET_NAMES = ("none", "iclr2026", "v5")

# The term-form arguments: each is a field of RegularizerConfig, under the same name except these two,
# whose command-line names say what they choose. A field left unset (None) takes the preset's value,
# or without a preset RegularizerConfig's default (the ICLR-2026 NLG forms).
_RENAMED_IN_REGULARIZER_CONFIG = {"consistency_type": "consistency", "diversity_type": "diversity"}
_TERM_FORM_ARGUMENTS = (
    "consistency_type",
    "temperature",
    "diversity_type",
    "entropy_top_k",
    "svd_top_k",
    "svd_normalizer",
)


def _regularizer_config_field(argument: str) -> str:
    """The RegularizerConfig field that the training argument `argument` sets."""
    return _RENAMED_IN_REGULARIZER_CONFIG.get(argument, argument)


def _defaults(preset_name: str, task: str) -> tuple[RegularizerConfig, dict[str, float]]:
    """(term forms, λs) that fill the fields a user left unset: the preset's, or for "none" the
    RegularizerConfig defaults (for either task) with every λ = 0."""
    if preset_name == "none":
        return RegularizerConfig(task=task), preset("none", task)[1]
    return preset(preset_name, task)


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
    regularizer_task: str = field(default="nlg", metadata={"help": "nlg | nlu (set by the entry script)."})
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
        default=1024,
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
        if self.regularizer_preset not in PRESET_NAMES:
            raise ValueError(
                f"regularizer_preset must be one of {PRESET_NAMES}, got {self.regularizer_preset!r}"
            )
        if self.regularizer_task not in ("nlg", "nlu"):
            raise ValueError(f"regularizer_task must be 'nlg' or 'nlu', got {self.regularizer_task!r}")
        if self.lambda_schedule not in LAMBDA_SCHEDULES:
            raise ValueError(
                f"lambda_schedule must be one of {LAMBDA_SCHEDULES}, got {self.lambda_schedule!r}"
            )
        default_config, default_lambdas = _defaults(self.regularizer_preset, self.regularizer_task)
        for name in _TERM_FORM_ARGUMENTS:
            if getattr(self, name) is None:
                setattr(self, name, getattr(default_config, _regularizer_config_field(name)))
        for term in TERMS:
            if getattr(self, f"lambda_{term}") is None:
                setattr(self, f"lambda_{term}", float(default_lambdas[term]))
            elif getattr(self, f"lambda_{term}") < 0:
                raise ValueError(f"lambda_{term} must be >= 0, got {getattr(self, f'lambda_{term}')}")
        # Builds and validates the term configuration now, so a bad value fails before any model loads.
        self.regularizer_config()

    def regularizer_config(self) -> RegularizerConfig:
        """The RegularizerConfig of these arguments (term forms, task, chunk size, eigensolver)."""
        forms = {_regularizer_config_field(name): getattr(self, name) for name in _TERM_FORM_ARGUMENTS}
        # The eigensolver is not a preset field and stays None unless set: it changes the cost, not the
        # term, and a None leaves the saved configs of earlier runs comparable (results.check_same_config).
        return RegularizerConfig(
            task=self.regularizer_task,
            chunk_size=self.regularizer_chunk_rows,
            svd_eigensolver=self.svd_eigensolver or "eigh",
            **forms,
        )

    @property
    def regularizers_enabled(self) -> bool:
        return any(getattr(self, f"lambda_{t}") > 0 for t in TERMS)


def scheduled_lambdas(base: dict[str, float], schedule: str, step: int, max_steps: int) -> dict[str, float]:
    """λ values at optimizer step `step` of `max_steps` (docs/method.md §3; balora.schedules).

    Args:
        base: {"consistency": λ1, "diversity": λ2, "svd": λ3}.
        schedule: "constant" | "iclr2026" (the ICLR-2026 script's cosine λ1 and two-phase λ2, λ3).
    """
    factors = lambda_factors(schedule, step, max_steps)
    return {term: base[term] * factors[term] for term in base}


class _AdaLoraBudgetCallback(TrainerCallback):
    """AdaLoRA reallocates ranks from the gradients after each optimizer step (peft's update_and_allocate)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        model.base_model.update_and_allocate(state.global_step)


@dataclass(frozen=True)
class _RowCapture:
    """How the student's forward yields (task loss, logit rows, hidden rows); chosen once per model.

    mode: "rows-only head" | "row tap" | "gather" (module docstring). body, head: the decoder body and
    LM head where the logits are a plain linear map of the last hidden state, else None (NLU too).
    svd_head: the head whose input gives the hidden-space SVD term, or None; svd_path: why not.
    """

    mode: str
    body: torch.nn.Module | None
    head: torch.nn.Linear | None
    svd_head: torch.nn.Linear | None
    svd_path: str

    def student(self, trainer, model, inputs, rows, num_items_in_batch, full_forward, want_rows):
        """(task loss, outputs or None, logit rows or None, hidden rows or None) of one micro-batch.

        rows: the step's supervised (b, t) positions (NLG) or None (NLU: the rows are the examples).
        full_forward: Trainer.compute_loss with the model's full head, returning (loss, outputs).
        want_rows: whether a term needs the rows; without terms the tap and gather paths are the
        Trainer's loss exactly.
        """
        if self.mode == "rows-only head":
            loss, logits, hidden = _forward_on_rows(
                trainer, model, inputs, rows, num_items_in_batch, self.head
            )
            return loss, None, logits, hidden
        if not want_rows:
            return (*full_forward(), None, None)
        captured, tapped, hooks = [], [], []
        if self.svd_head is not None:  # the head's input, for the hidden-space SVD term
            hooks.append(
                self.svd_head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
            )
        if self.mode == "row tap":

            def tap(module, args, output):
                if tapped or output.shape[:-1] != inputs["labels"].shape:
                    tapped.append(None)  # the head ran twice or on other positions: gather below instead
                    return None
                tapped.append(_RowsTap.apply(output, *rows))
                return tapped[0][0]

            hooks.append(self.head.register_forward_hook(tap))
        try:
            loss, outputs = full_forward()
        finally:
            for hook in hooks:
                hook.remove()
        if len(tapped) == 1 and tapped[0] is not None and tapped[0][0] is outputs.logits:
            logits = tapped[0][1].unsqueeze(0)  # (1, N, V); _RowsTap adds their gradient at the N rows
        else:
            logits = _gather(outputs.logits, rows)
        hidden = None
        if len(captured) == 1 and captured[0].shape[:-1] == outputs.logits.shape[:-1]:
            hidden = _gather(captured[0], rows)  # (1, N, H)
        return loss, outputs, logits, hidden


def _gather(x: torch.Tensor, rows) -> torch.Tensor:
    """NLG: the N rows of a (B, T, D) tensor as (1, N, D); NLU (rows None): x as given."""
    return x if rows is None else x[rows].unsqueeze(0)


def _forward_on_rows(trainer, model, inputs: dict, rows, num_items_in_batch, head: torch.nn.Linear):
    """The student's forward with the LM head on the N supervised rows only.

    A forward pre-hook narrows the head's input from (B, T, H) to the (N, H) rows that predict a label,
    so the model (and whatever wraps it: peft, DDP, DeepSpeed, autocast) runs as usual and returns
    (N, V) logits. The task loss is then Trainer.compute_loss's causal-LM loss on those rows: a sum
    over num_items_in_batch when the model takes it (× the processes when tokens are averaged across
    devices), else the mean.

    Returns:
        loss (scalar), logits (1, N, V), hidden (1, N, H): the rows the regularisers use.
    """
    narrowed: list[torch.Tensor] = []

    def narrow(module, args):
        if narrowed:
            raise RuntimeError("rows_only_lm_head: the LM head ran twice in one forward")
        narrowed.append(args[0][rows])  # (N, H)
        return (narrowed[0], *args[1:])

    hook = head.register_forward_pre_hook(narrow)
    try:
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
    finally:
        hook.remove()
    logits = outputs.logits  # (N, V)
    targets = inputs["labels"][rows[0], rows[1] + 1]
    by_items = bool(trainer.model_accepts_loss_kwargs) and num_items_in_batch is not None
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum" if by_items else "mean")
    if by_items:
        items = (
            num_items_in_batch.to(loss.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
        )
        loss = loss / items
        if trainer.args.average_tokens_across_devices:
            tp_size = trainer.get_tp_size() if hasattr(trainer, "get_tp_size") else 1
            world = (
                trainer.accelerator.num_processes // tp_size
                if trainer.args.n_gpu <= 1
                else trainer.args.n_gpu
            )
            loss = loss * world
    return loss, logits.unsqueeze(0), narrowed[0].unsqueeze(0)


def _hidden_svd_head(model, task: str = "nlg", enabled: bool = True) -> tuple[torch.nn.Linear | None, str]:
    """(the LM head whose input gives the SVD term in hidden space, or None; the path: "hidden space" or
    "logits space: <why>"). Needs a frozen nn.Linear without bias that produces the logits with
    nothing after it, and its whole weight on this rank."""
    body_and_head = _rows_only_head(model) if enabled and task == "nlg" else None
    head = body_and_head[1] if body_and_head is not None else None
    if not enabled:
        reason = "hidden-space path disabled"
    elif task != "nlg":
        reason = "NLU heads are not handled in hidden space"
    elif head is None:
        reason = "the logits are not a plain linear map of the last hidden state for this model"
    elif type(head) is not torch.nn.Linear:
        reason = f"the LM head is a {type(head).__name__} (adapted or wrapped), not a frozen nn.Linear"
    elif head.bias is not None:
        reason = "the LM head has a bias"
    elif head.weight.requires_grad:
        reason = "the LM head is trained"
    elif tuple(head.weight.shape) != (head.out_features, head.in_features):
        reason = "the LM head's weight is partitioned (ZeRO-3)"
    else:
        return head, "hidden space"
    return None, f"logits space: {reason}"


def _fold(entries: list[tuple[float, float]]) -> tuple[float, float]:
    """(Σ sums, Σ weights) of a metric's micro-batch entries, added in order (the logged bits do not
    depend on a summation algorithm)."""
    total = weight = 0.0
    for value, count in entries:
        total += value
        weight += count
    return total, weight


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
            # its loss by `num_items_in_batch` and stops dividing by the accumulation steps. Sequence
            # classifiers return a plain mean loss and ignore that argument: say so, or gradient
            # accumulation would scale the loss (and the regularisers) by the accumulation steps.
            self.model_accepts_loss_kwargs = False
        self._base_lambdas = {t: float(getattr(self.args, f"lambda_{t}")) for t in TERMS}
        unwrapped = self.accelerator.unwrap_model(self.model)
        self._has_reference = balora_state(unwrapped) is not None
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
        self._capture: tuple[torch.nn.Module, _RowCapture] | None = None
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
        rows = self._supervised_rows(inputs)
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
            path = capture.svd_path
            if capture.svd_head is not None and hidden is None:
                path = "logits space: the LM head ran more than once or on other positions"
            elif capture.svd_head is not None:
                hidden_svd = {"hidden": hidden, "head_factor": self._head_factor(capture.svd_head)}
            self._note_svd_path(path)
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
                cfg = self._regularizer_config
                terms = regularizer_terms(
                    logits.detach(), ref_logits, None, cfg, terms=logged_only, **detached
                )
            values.update((t, terms[t]) for t in logged_only)
        for t in TERMS:
            if t in values:
                self._metrics[t].append((float(values[t].detach()), 1.0))
        return regularizer

    def _row_capture(self, model, return_outputs: bool) -> _RowCapture:
        """The row capture of `model`, chosen on its first step (the choice is logged with its reason)."""
        unwrapped = self.accelerator.unwrap_model(model)
        if self._capture is None or self._capture[0] is not unwrapped:
            self._capture = (unwrapped, self._choose_row_capture(unwrapped))
        capture = self._capture[1]
        if return_outputs and capture.mode == "rows-only head":  # the caller wants the (B, T, V) logits
            capture = dataclasses.replace(capture, mode="row tap" if self._tap_rows_enabled else "gather")
        return capture

    def _choose_row_capture(self, unwrapped) -> _RowCapture:
        task = self.args.regularizer_task
        body, head = (_rows_only_head(unwrapped) if task == "nlg" else None) or (None, None)
        svd_head, svd_path = _hidden_svd_head(unwrapped, task, self._hidden_svd_enabled)
        reason = None
        if head is None:
            reason = "the logits are not a plain linear map of the last hidden state for this model"
        elif not self.args.rows_only_lm_head:
            reason = "rows_only_lm_head is off"
        elif self.label_smoother is not None or self.compute_loss_func is not None:
            reason = "a label smoother or a custom loss function is set"
        if reason is None:
            mode = "rows-only head"
        else:
            mode = "row tap" if head is not None and self._tap_rows_enabled else "gather"
        if task == "nlg":
            self.student_head_path = "supervised rows" if reason is None else f"every position: {reason}"
            logger.info("BA-LoRA student LM head applied to %s", self.student_head_path)
        return _RowCapture(mode, body, head, svd_head, svd_path)

    def _supervised_rows(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        """NLG: (N,), (N,) indices (b, t) of the logits that predict a supervised token, labels[b, t+1]
        ≠ −100, computed once per micro-batch; NLU: None (the rows are the examples)."""
        if self.args.regularizer_task == "nlu":
            return None
        if inputs.get("labels") is None:
            raise ValueError(
                "NLG training needs labels in every batch (-100 at the positions not trained on)"
            )
        return (inputs["labels"][:, 1:] != -100).nonzero(as_tuple=True)

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

    def _note_svd_path(self, path: str) -> None:
        if path != self.svd_path:
            logger.info("BA-LoRA SVD term computed in %s", path)
            self.svd_path = path

    def _head_factor(self, head: torch.nn.Linear) -> torch.Tensor:
        """L with L Lᵀ = Wᵀ W of the frozen head, computed once (again only if the weight changes)."""
        weight = head.weight
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        if self._head_factor_cache is None or self._head_factor_cache[0] != key:
            self._head_factor_cache = (key, head_gram_factor(weight))
        return self._head_factor_cache[1]

    def _reference_logits(self, model, inputs: dict, rows, capture: _RowCapture) -> torch.Tensor:
        """Reference logits on the regulariser rows; NLU rows come from the per-example cache when seen."""
        use_cache = self.args.regularizer_task == "nlu" and self.args.cache_reference_logits
        keys = self._example_keys(inputs) if use_cache else None
        if keys is not None and all(k in self._reference_cache for k in keys):
            return torch.stack([self._reference_cache[k] for k in keys]).to(inputs["input_ids"].device)
        ref_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        unwrapped = self.accelerator.unwrap_model(model)
        with reference_mode(unwrapped):
            if capture.body is None:
                ref_logits = _gather(unwrapped(**ref_inputs).logits, rows)
            else:  # the head on the N rows only: no (B, T, V) reference logits
                hidden = capture.body(**ref_inputs).last_hidden_state  # (B, T, H)
                ref_logits = capture.head(hidden[rows]).unsqueeze(0)  # (1, N, V)
        if keys is not None:
            for key, row in zip(keys, ref_logits.detach().float().cpu(), strict=True):
                self._reference_cache[key] = row  # (C,)
        return ref_logits

    @staticmethod
    def _example_keys(inputs: dict) -> list[bytes]:
        """A digest per example of its unpadded model inputs (padding length varies between batches)."""
        ids = inputs["input_ids"]
        attention = inputs.get("attention_mask")
        extra = [inputs[k] for k in ("token_type_ids",) if k in inputs]
        keys = []
        for row in range(ids.shape[0]):
            keep = (
                attention[row].bool()
                if attention is not None
                else torch.ones_like(ids[row], dtype=torch.bool)
            )
            digest = hashlib.sha1(ids[row][keep].cpu().numpy().tobytes())
            for tensor in extra:
                digest.update(tensor[row][keep].cpu().numpy().tobytes())
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
            if rows is not None:
                items = float(rows[0].numel())
            else:
                items = float(labels.numel()) if labels is not None else 1.0
            self._metrics["task"].append((value * float(num_items_in_batch) / world, items))
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


class _RowsTap(torch.autograd.Function):
    """Identity on the student's (B, T, V) logits that also returns their N supervised rows (N, V).

    A plain gather `logits[rows_b, rows_t]` backpropagates through a fresh B×T×V zero tensor, an
    accumulating index_put of the N rows into it, and autograd's B×T×V sum with the task loss's
    gradient. Here the backward adds the rows' gradient to the task loss's gradient at the N rows
    (index_add into a copy: the gradient autograd hands in is not modified). The same sums, element by
    element (g_task + g_rows), so the result is bit-identical, without the B×T×V temporaries
    (benchmarks/README.md).
    """

    @staticmethod
    def forward(ctx, logits, rows_b, rows_t):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(rows_b, rows_t)
        ctx.logits_shape = logits.shape
        return logits, logits[rows_b, rows_t]  # autograd returns the first as a view of the input

    @staticmethod
    def backward(ctx, grad_logits, grad_rows):
        if grad_rows is None:
            return grad_logits, None, None
        rows_b, rows_t = ctx.saved_tensors
        batch, length, vocab = ctx.logits_shape
        if grad_logits is None:
            grad_logits = grad_rows.new_zeros(ctx.logits_shape)
        positions = rows_b * length + rows_t  # (N,) flat (b, t) indices, each once
        summed = grad_logits.reshape(batch * length, vocab).index_add(0, positions, grad_rows)
        return summed.view(batch, length, vocab), None, None


# Decoder LMs whose logits are `lm_head(last_hidden_state)` with nothing after it (no soft-capping or
# logit scaling), so the reference may apply the head to the N supervised rows only.
_ROWS_ONLY_HEAD_MODEL_TYPES = ("llama", "mistral", "gemma", "qwen2", "qwen3")


def _rows_only_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder body, LM head) of a causal LM (or of the peft model wrapping it), or None when the
    logits are not a plain linear map of the body's last hidden state."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(causal_lm, "config", None)
    if getattr(config, "model_type", None) not in _ROWS_ONLY_HEAD_MODEL_TYPES:
        return None
    if getattr(config, "final_logit_softcapping", None) is not None:
        return None
    body = getattr(causal_lm, "model", None)
    head = causal_lm.get_output_embeddings()
    if body is None or not isinstance(head, torch.nn.Linear):
        return None
    return body, head
