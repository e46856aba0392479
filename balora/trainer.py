"""A transformers Trainer that adds the BA-LoRA regularisers (docs/method.md §3) and logs each term.

    L = L_task + λ1·L_consistency + λ2·L_diversity + λ3·L_svd

* NLG: the terms are computed on shifted, response-only positions: the logit at t predicts token t+1
  and a row is valid where labels[t+1] != -100 (the same rows as the task loss). Those N rows are
  taken once as an (1, N, V) tensor, so the regularisers' backward writes N×V gradients, not B×T×V
  ones: at the LM head's output (`_RowsTap`, whose backward adds them to the task loss's gradient at
  the N rows, bit-identical to a gather) for decoder LMs whose head is a plain linear map
  (`_ROWS_ONLY_HEAD_MODEL_TYPES`), else by a gather of the returned logits. The reference applies its
  LM head to those N rows only (the same models). On SmolLM2 4×256 with 308 response rows this saves
  ~15% of the reference forward and the B×T×V reference logits (benchmarks/README.md).
* NLG with `rows_only_lm_head` (opt-in): the student's LM head too runs on those N rows only (a pre-hook
  narrows its input), and the task loss is the causal-LM loss on them: the same values to float rounding
  (tests/test_rows_only_head.py), without the B×T×V logits.
* NLU: the rows are the examples, the columns the classes (1 for regression).
* The reference logits come from `balora.adapters.reference_mode` (the frozen pre-trained function),
  computed without gradients; the model must come from `balora.adapters.prepare_model` when λ1 > 0.
* The regularisers are per-micro-batch means. Their weight must not depend on gradient accumulation:
  when the Trainer normalises the task loss by the number of items of the whole optimizer step (models
  that accept `num_items_in_batch`, i.e. causal LMs), it does NOT divide by the accumulation steps, so
  we divide the regulariser by them here; otherwise the Trainer divides the sum by them itself.
* A term with λ = 0 is not part of the loss: with all λ = 0 the loss is exactly `Trainer.compute_loss`'s.
  It is computed only on the steps whose training log is written, without gradients, so that ablation
  runs log every term while the loss and the update stay unchanged; the other steps skip it (and the
  reference forward when λ1 = 0). Its consistency term needs the reference (a `prepare_model` model).
* Logged per optimizer step, at full precision (averaged over micro-batches and across ranks):
  `task_loss`, `consistency_loss`, `diversity_loss`, `svd_loss` (unweighted; a term with λ > 0 averaged
  over every step since the last log, one with λ = 0 over the logged step) and the current `lambda_*`.
  They go to `trainer.state.log_history` and to TensorBoard (the default `report_to`) as `train/<name>`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from balora.adapters import balora_state, reference_mode
from balora.regularizers import TERMS, RegularizerConfig, preset, regularizer_terms

LAMBDA_SCHEDULES = ("constant", "iclr2026")
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
        default=False,
        metadata={
            "help": "NLG training: apply the LM head to the N supervised rows only (a pre-hook narrows "
            "its input), not to every position; the task loss and the terms then use those (N, V) logits. "
            "Same loss and gradients up to float rounding, less time and memory when prompts are long or "
            "the vocabulary is large. LLaMA, Mistral, Gemma, Qwen2/3 (plain linear head); other models "
            "keep the full head (logged). Off by default: the default loss is Trainer.compute_loss's, bit "
            "for bit."
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
    """λ values at optimizer step `step` of `max_steps` (docs/method.md §3, the ICLR-2026 script's schedule).

    Args:
        base: {"consistency": λ1, "diversity": λ2, "svd": λ3}.
        schedule: "constant" | "iclr2026".
    """
    if schedule == "constant" or max_steps <= 0:
        return dict(base)
    progress = min(max(step / max_steps, 0.0), 1.0)
    # λ1: cosine decay from λ1 to 0.1·λ1.
    consistency = base["consistency"] * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
    # λ2, λ3: off for the first 20% of steps, then a linear ramp over the next 5%.
    ramp = min(max((progress - 0.20) / 0.05, 0.0), 1.0)
    return {"consistency": consistency, "diversity": base["diversity"] * ramp, "svd": base["svd"] * ramp}


class _AdaLoraBudgetCallback(TrainerCallback):
    """AdaLoRA reallocates ranks from the gradients after each optimizer step (peft's update_and_allocate)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        model.base_model.update_and_allocate(state.global_step)


class BALoRATrainer(Trainer):
    """Trainer whose loss adds the weighted BA-LoRA regularisers; see the module docstring.

    For decoder LMs whose logits are a frozen, bias-free linear map of the last hidden state (LLaMA,
    Mistral, Gemma-1, Qwen), the SVD term is computed in hidden space from the LM head's input, taken
    by a forward pre-hook (exact; `balora.regularizers.svd_loss_hidden`); otherwise in logits space.
    `svd_path` and the log say which ran.
    """

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
        self._has_reference = balora_state(self.accelerator.unwrap_model(self.model)) is not None
        if self._base_lambdas["consistency"] > 0 and not self._has_reference:
            # Under PiSSA, disabling a plain peft adapter gives the residual model, not the pre-trained
            # one: the consistency term needs the frozen reference that prepare_model attaches.
            raise ValueError(
                "BALoRATrainer with a consistency λ > 0 needs a model returned by "
                "balora.adapters.prepare_model (it attaches the frozen reference); got a "
                f"{type(self.model).__name__} prepared elsewhere (e.g. peft.get_peft_model)"
            )
        self._reference_cache: dict[bytes, torch.Tensor] = {}  # NLU: example digest -> (C,) reference logits
        # Running sums since the last log: [task loss sum, task items, each term's sum, each term's count].
        self._term_sums = torch.zeros(2 + 2 * len(TERMS), dtype=torch.float64)
        unwrapped = self.accelerator.unwrap_model(self.model)
        if (
            getattr(getattr(unwrapped, "base_model", None), "update_and_allocate", None) is not None
            and type(unwrapped.base_model).__name__ == "AdaLoraModel"
        ):
            self.add_callback(_AdaLoraBudgetCallback(self))

    def current_lambdas(self) -> dict[str, float]:
        return scheduled_lambdas(
            self._base_lambdas, self.args.lambda_schedule, self.state.global_step, self.state.max_steps
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None, **kwargs):
        lambdas = self.current_lambdas()
        # Terms with λ > 0 enter the loss. Terms with λ = 0 are computed only to be logged: without
        # gradients, on the micro-batches of a step whose log is written (the loss is unchanged).
        active = [t for t in TERMS if lambdas[t] > 0]
        logs_this_step = model.training and self._logs_this_step()
        logged_only = [
            t
            for t in TERMS
            if t not in active and logs_this_step and (t != "consistency" or self._has_reference)
        ]
        rows_head = self._rows_only_student_head(model, inputs, return_outputs) if model.training else None
        if not model.training or not (active or logged_only):
            # No term is computed (and no reference forward), or evaluation, where the reported loss is
            # the task loss: exactly the plain Trainer loss, or its rows-only equal (rows_only_lm_head).
            if rows_head is not None:
                loss = self._student_on_rows(model, inputs, num_items_in_batch, rows_head)[0]
                self._accumulate_task_loss(loss, inputs, num_items_in_batch)
                return loss
            loss_and_outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch, **kwargs
            )
            if model.training:
                self._accumulate_task_loss(loss_and_outputs[0], inputs, num_items_in_batch)
            return loss_and_outputs if return_outputs else loss_and_outputs[0]

        computed = active + logged_only
        # The SVD term in hidden space where the logits are a frozen linear map Z = H Wᵀ of the LM head's
        # input H (exact: σ(Z) = σ(H L), L Lᵀ = Wᵀ W): H is taken by a hook on the head, no extra forward.
        head = self._hidden_svd_head(model) if "svd" in computed else None
        ref_logits = None
        if "consistency" in active and self._reference_first:
            # Before the student's forward: its activations then reuse the memory the reference freed.
            ref_logits = self._reference_logits(model, inputs)
        outputs = None
        if rows_head is not None:
            loss, logits, rows_hidden = self._student_on_rows(model, inputs, num_items_in_batch, rows_head)
            captured = [rows_hidden]
        else:
            captured, tapped = [], []
            hooks = []
            if head is not None:
                hooks.append(head.register_forward_pre_hook(lambda module, args: captured.append(args[0])))
            tap_head = self._tapped_head(model)
            if tap_head is not None:
                rows_b, rows_t = self._valid_positions(inputs)

                def tap(module, args, output):
                    if tapped or output.shape[:-1] != inputs["labels"].shape:
                        # The head ran twice or on other positions: the rows are gathered below instead.
                        tapped.append(None)
                        return None
                    aliased, rows = _RowsTap.apply(output, rows_b, rows_t)
                    tapped.append((aliased, rows))
                    return aliased

                hooks.append(tap_head.register_forward_hook(tap))
            try:
                loss, outputs = super().compute_loss(
                    model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch, **kwargs
                )
            finally:
                for hook in hooks:
                    hook.remove()
            if len(tapped) == 1 and tapped[0] is not None and tapped[0][0] is outputs.logits:
                logits = tapped[0][1].unsqueeze(0)  # (1, N, V); _RowsTap adds their gradient at the N rows
            else:
                logits = self._rows(outputs.logits, inputs)
        self._accumulate_task_loss(loss, inputs, num_items_in_batch)
        if "consistency" in computed and ref_logits is None:
            ref_logits = self._reference_logits(model, inputs)
        hidden_svd = {}
        if head is not None:
            if rows_head is head:  # the narrowed head input is the hidden state of the N rows
                hidden_svd = {"hidden": captured[0], "head_factor": self._head_factor(head)}
            elif len(captured) == 1 and captured[0].shape[:-1] == outputs.logits.shape[:-1]:
                hidden_svd = {
                    "hidden": self._rows(captured[0], inputs),
                    "head_factor": self._head_factor(head),
                }
            else:
                self._note_svd_path(
                    f"logits space: the LM head ran {len(captured)} times or on other positions"
                )
        values: dict[str, torch.Tensor] = {}
        if active:
            terms = regularizer_terms(
                logits, ref_logits, None, self._regularizer_config, terms=active, **hidden_svd
            )
            regularizer = sum(lambdas[t] * terms[t] for t in active)
            if self._loss_is_scaled_for_ga(num_items_in_batch):
                # The Trainer will not divide by the accumulation steps: do it for the per-micro-batch means.
                regularizer = regularizer / self.current_gradient_accumulation_steps
            loss = loss + regularizer
            values.update((t, terms[t]) for t in active)
        if logged_only:
            with torch.no_grad():
                detached = {k: v.detach() for k, v in hidden_svd.items()}
                terms = regularizer_terms(
                    logits.detach(), ref_logits, None, self._regularizer_config, terms=logged_only, **detached
                )
            values.update((t, terms[t]) for t in logged_only)
        with torch.no_grad():
            for i, t in enumerate(TERMS):
                if t in values:
                    self._term_sums[2 + i] += float(values[t].detach())
                    self._term_sums[2 + len(TERMS) + i] += 1
        return (loss, outputs) if return_outputs else loss

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

    # --- helpers --------------------------------------------------------------------------------------

    # Where the SVD term runs: "hidden space" or "logits space: <why>" (logged when it is first decided or
    # changes). Setting _hidden_svd_enabled = False forces the logits-space term (the reference formula).
    # _reference_first: the reference forward runs before the student's (same result, less memory traffic).
    _hidden_svd_enabled = True
    _reference_first = True
    # _tap_rows_enabled: the regulariser rows come from the LM head's output through _RowsTap (their
    # gradient added at the N rows), not from a gather of the returned logits (same values and gradients).
    _tap_rows_enabled = True
    svd_path: str | None = None
    _head_factor_cache: tuple[tuple, torch.Tensor] | None = None

    def _hidden_svd_head(self, model) -> torch.nn.Linear | None:
        """The LM head when the SVD term can be computed from its input (a frozen nn.Linear without bias
        that produces the logits with nothing after it), else None; the chosen path is logged."""
        head, reason = None, None
        if not self._hidden_svd_enabled:
            reason = "hidden-space path disabled"
        elif self.args.regularizer_task != "nlg":
            reason = "NLU heads are not handled in hidden space"
        else:
            body_and_head = _rows_only_head(self.accelerator.unwrap_model(model))
            candidate = body_and_head[1] if body_and_head is not None else None
            if candidate is None:
                reason = "the logits are not a plain linear map of the last hidden state for this model"
            elif type(candidate) is not torch.nn.Linear:
                reason = f"the LM head is a {type(candidate).__name__} (adapted or wrapped), not a frozen nn.Linear"
            elif candidate.bias is not None:
                reason = "the LM head has a bias"
            elif candidate.weight.requires_grad:
                reason = "the LM head is trained"
            elif tuple(candidate.weight.shape) != (candidate.out_features, candidate.in_features):
                reason = "the LM head's weight is partitioned (ZeRO-3)"
            else:
                head = candidate
        self._note_svd_path("hidden space" if head is not None else f"logits space: {reason}")
        return head

    def _note_svd_path(self, path: str) -> None:
        if path != self.svd_path:
            logging.getLogger(__name__).info("BA-LoRA SVD term computed in %s", path)
            self.svd_path = path

    def _tapped_head(self, model) -> torch.nn.Linear | None:
        """The LM head whose output is the model's logits, to take the N regulariser rows from (NLG,
        `_ROWS_ONLY_HEAD_MODEL_TYPES`), or None: the rows are then gathered from the returned logits."""
        if not self._tap_rows_enabled or self.args.regularizer_task != "nlg":
            return None
        body_and_head = _rows_only_head(self.accelerator.unwrap_model(model))
        return body_and_head[1] if body_and_head is not None else None

    # Where the student's LM head runs (rows_only_lm_head): "supervised rows" or "every position: <why>".
    student_head_path: str | None = None

    def _rows_only_student_head(self, model, inputs: dict, return_outputs: bool) -> torch.nn.Linear | None:
        """The LM head to narrow to the supervised rows, or None for the standard full-logits forward."""
        if not self.args.rows_only_lm_head or self.args.regularizer_task != "nlg":
            return None
        reason = None
        if return_outputs:
            reason = "the caller asked for the full outputs"
        elif self.label_smoother is not None or self.compute_loss_func is not None:
            reason = "a label smoother or a custom loss function is set"
        elif inputs.get("labels") is None or inputs["labels"].dim() != 2:
            reason = "the batch has no (B, T) labels"
        else:
            body_and_head = _rows_only_head(self.accelerator.unwrap_model(model))
            if body_and_head is None:
                reason = "the logits are not a plain linear map of the last hidden state for this model"
        path = "supervised rows" if reason is None else f"every position: {reason}"
        if path != self.student_head_path:
            logging.getLogger(__name__).info("BA-LoRA student LM head applied to %s", path)
            self.student_head_path = path
        return body_and_head[1] if reason is None else None

    def _student_on_rows(
        self, model, inputs: dict, num_items_in_batch, head: torch.nn.Linear
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The student's forward with the LM head on the N supervised rows only.

        A forward pre-hook narrows the head's input from (B, T, H) to the (N, H) rows that predict a
        label, so the model (and whatever wraps it: peft, DDP, DeepSpeed, autocast) runs as usual and
        returns (N, V) logits. The task loss is then Trainer.compute_loss's causal-LM loss on those rows:
        a sum over num_items_in_batch when the model takes it (× the processes when tokens are averaged
        across devices), else the mean.

        Returns:
            loss (scalar), logits (1, N, V), hidden (1, N, H): the rows the regularisers use.
        """
        rows_b, rows_t = self._valid_positions(inputs)
        narrowed: list[torch.Tensor] = []

        def narrow(module, args):
            if narrowed:
                raise RuntimeError("rows_only_lm_head: the LM head ran twice in one forward")
            narrowed.append(args[0][rows_b, rows_t])  # (N, H)
            return (narrowed[0], *args[1:])

        hook = head.register_forward_pre_hook(narrow)
        try:
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
        finally:
            hook.remove()
        logits = outputs.logits  # (N, V)
        targets = inputs["labels"][rows_b, rows_t + 1]
        by_items = bool(self.model_accepts_loss_kwargs) and num_items_in_batch is not None
        loss = torch.nn.functional.cross_entropy(
            logits.float(), targets, reduction="sum" if by_items else "mean"
        )
        if by_items:
            items = (
                num_items_in_batch.to(loss.device)
                if torch.is_tensor(num_items_in_batch)
                else num_items_in_batch
            )
            loss = loss / items
            if self.args.average_tokens_across_devices:
                tp_size = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
                loss = loss * (
                    self.accelerator.num_processes // tp_size if self.args.n_gpu <= 1 else self.args.n_gpu
                )
        return loss, logits.unsqueeze(0), narrowed[0].unsqueeze(0)

    def _head_factor(self, head: torch.nn.Linear) -> torch.Tensor:
        """L with L Lᵀ = Wᵀ W of the frozen head, computed once (again only if the weight changes)."""
        weight = head.weight
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        if self._head_factor_cache is None or self._head_factor_cache[0] != key:
            from balora.regularizers import head_gram_factor

            self._head_factor_cache = (key, head_gram_factor(weight))
        return self._head_factor_cache[1]

    def _reference_logits(self, model, inputs: dict) -> torch.Tensor:
        """Reference logits on the regulariser rows; NLU rows come from the per-example cache when seen."""
        use_cache = self.args.regularizer_task == "nlu" and self.args.cache_reference_logits
        keys = self._example_keys(inputs) if use_cache else None
        if keys is not None and all(k in self._reference_cache for k in keys):
            return torch.stack([self._reference_cache[k] for k in keys]).to(inputs["input_ids"].device)
        ref_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        unwrapped = self.accelerator.unwrap_model(model)
        with reference_mode(unwrapped):
            body_and_head = _rows_only_head(unwrapped) if self.args.regularizer_task == "nlg" else None
            if body_and_head is None:
                ref_logits = self._rows(unwrapped(**ref_inputs).logits, inputs)
            else:
                body, head = body_and_head
                hidden = body(**ref_inputs).last_hidden_state  # (B, T, H)
                rows_b, rows_t = self._valid_positions(inputs)
                ref_logits = head(hidden[rows_b, rows_t]).unsqueeze(0)  # (1, N, V)
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

    def _rows(self, logits: torch.Tensor, inputs: dict) -> torch.Tensor:
        """The regulariser rows: NLG the N valid shifted positions as (1, N, V); NLU (B, C) as given."""
        if self.args.regularizer_task == "nlu":
            return logits
        rows_b, rows_t = self._valid_positions(inputs)
        return logits[rows_b, rows_t].unsqueeze(0)

    @staticmethod
    def _valid_positions(inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,), (N,) indices (b, t) of the logits that predict a supervised token: labels[b, t+1] ≠ −100."""
        return (inputs["labels"][:, 1:] != -100).nonzero(as_tuple=True)

    def _accumulate_task_loss(self, loss: torch.Tensor, inputs: dict, num_items_in_batch) -> None:
        """Track the task loss so that its per-step mean can be logged beside the terms."""
        with torch.no_grad():
            value = float(loss.detach().float().mean())
            if self._loss_is_scaled_for_ga(num_items_in_batch):
                # loss = (token-loss sum of this micro-batch) / (items of the whole step) · world scale.
                world = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
                items = float(num_items_in_batch)
                self._term_sums[0] += value * items / world
                labels = inputs.get("labels")
                if labels is not None and labels.dim() == 2:  # causal LM: items = shifted valid labels
                    self._term_sums[1] += float((labels[:, 1:] != -100).sum())
                else:
                    self._term_sums[1] += float(labels.numel()) if labels is not None else 1.0
            else:
                self._term_sums[0] += value
                self._term_sums[1] += 1.0

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log (evaluation logs carry eval_loss)
            sums = self._term_sums.to(self.args.device)
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            sums = sums.cpu()
            if sums[1] > 0:
                logs["task_loss"] = float(sums[0] / sums[1])
            for i, t in enumerate(TERMS):
                count = sums[2 + len(TERMS) + i]
                if count > 0:
                    logs[f"{t}_loss"] = float(sums[2 + i] / count)
            for t, value in self.current_lambdas().items():
                logs[f"lambda_{t}"] = value
            self._term_sums.zero_()
        super().log(logs, *args, **kwargs)


class _RowsTap(torch.autograd.Function):
    """Identity on the student's (B, T, V) logits that also returns their N supervised rows (N, V).

    A plain gather `logits[rows_b, rows_t]` backpropagates through a fresh B×T×V zero tensor, an
    accumulating index_put of the N rows into it, and autograd's B×T×V sum with the task loss's
    gradient. Here the backward adds the rows' gradient to the task loss's gradient at the N rows
    (index_add into a copy: the gradient autograd hands in is not modified). The same sums, element by
    element (g_task + g_rows), so the result is bit-identical; on SmolLM2 4×256 it saves ~70 ms per step
    on the CPU (benchmarks/README.md).
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
