"""Adapter set-up on top of peft, and the frozen pre-trained function used as the BA-LoRA reference.

Methods (AdapterConfig.method):
    full      all weights trainable; reference = a frozen copy of the initial weights (swapped in).
    lora      peft LoRA, B = 0 at init; reference = adapter disabled (exact).
    pissa     peft LoRA with PiSSA init (docs/method.md §1): the base becomes W_res = W - B·A, so disabling the
              adapter gives W_res, NOT W. The reference is a second, frozen peft adapter named
              "reference" holding the *initial* A, B (cost: one adapter, not a second model, and it
              works under ZeRO-3 because it is an ordinary module, not a tensor swap).
    dora, loha, adalora
              peft; the update is exactly zero at init, so reference = adapter disabled (exact).
    bitfit    only the bias vectors (and the task head) train; reference = their initial values swapped in.
    hadapter, padapter
              Houlsby / Pfeiffer bottleneck adapters (balora.bottleneck); reference = adapters bypassed.

For every method the task head named in `modules_to_save` (NLU) is trained and the reference uses the
*initial* head: peft keeps the original module for disabled adapters, the PiSSA reference adapter owns
a frozen copy taken at init, and the swap-based methods snapshot it.

`prepare_model` records the method (and, for full and bitfit, the initial values) in a `BALoRAState`
on the model it returns; `reference_mode` and the trainer read it, so a model prepared elsewhere (e.g.
by `peft.get_peft_model`) has no reference.

PiSSA decomposition can be done once and reused (`save_pissa_init` / `AdapterConfig.init_dir`): the
residual model and the initial adapter are saved, so seeds and runs share one decomposition and the
training process never decomposes partitioned (ZeRO-3) weights.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from balora.recipes import RECIPES, adapter_of  # named recipes (ba-lora), kept free of torch

logger = logging.getLogger(__name__)

METHODS = ("full", "lora", "pissa", "dora", "loha", "adalora", "bitfit", "hadapter", "padapter")
PEFT_METHODS = ("lora", "pissa", "dora", "loha", "adalora")
REFERENCE_ADAPTER = "reference"
TRAINED_ADAPTER = "default"
PISSA_INIT_ADAPTER = "pissa_init"
PISSA_RESIDUAL_MODEL = "residual_model"

# All seven projections of LLaMA/Mistral/Gemma blocks (the paper's setting).
LLAMA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class AdapterConfig:
    """How to make a model trainable.

    Attributes:
        method: one of METHODS.
        r: adapter rank (LoRA/PiSSA/DoRA/LoHa; AdaLoRA's target rank).
        alpha: LoRA alpha; the update is scaled by alpha / r. The paper uses alpha = r for PiSSA.
        dropout: dropout on the adapter input (0 in the paper).
        target_modules: module-name suffixes to adapt; None = the seven LLaMA projections.
        pissa_niter: None for the exact SVD, N for peft's randomised `pissa_niter_N` (global RNG: seed first).
        init_dir: PiSSA only: directory written by `save_pissa_init`; the model passed to prepare_model
            must then be its residual model (`pissa_residual_path(init_dir)`).
        modules_to_save: extra modules trained in full (an NLU classification head).
        reduction_factor: bottleneck adapters: hidden size / bottleneck size.
        adalora_init_r, adalora_tinit, adalora_tfinal, adalora_delta_t, adalora_total_step: AdaLoRA schedule
            (total_step is required by peft: the number of optimizer steps of the run).
    """

    method: str = "pissa"
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    target_modules: list[str] | None = None
    pissa_niter: int | None = None
    init_dir: str | None = None
    modules_to_save: list[str] | None = None
    reduction_factor: int = 16
    adalora_init_r: int = 12
    adalora_tinit: int = 0
    adalora_tfinal: int = 0
    adalora_delta_t: int = 10
    adalora_total_step: int | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.method in PEFT_METHODS and self.r < 1:
            raise ValueError(f"Adapter rank r must be >= 1, got {self.r}")
        if self.pissa_niter is not None and self.pissa_niter < 0:
            raise ValueError(f"pissa_niter must be None (exact SVD) or >= 0, got {self.pissa_niter}")
        if self.init_dir and self.method != "pissa":
            raise ValueError("init_dir (a saved PiSSA decomposition) only applies to method='pissa'")
        if self.method == "pissa" and self.alpha != self.r:
            warnings.warn(
                f"PiSSA with alpha ({self.alpha}) != r ({self.r}): the adapter's initial product is scaled by "
                "alpha/r, so peft rescales the residual to keep the function unchanged; the reference stays "
                "exact, but this is not the paper's setting (alpha = r).",
                stacklevel=2,
            )


# --- the command-line arguments ---------------------------------------------------------------------------


@dataclass
class AdapterArguments:
    """The adapter flags every training command shares (`--method`, `--lora_r`, ...), parsed with
    HfArgumentParser; `to_config()` gives the AdapterConfig they describe. A command sets its own
    defaults and method choices by subclassing (redefining a field keeps its flag and its place).

    `method` is an adapter method (METHODS) or a recipe (RECIPES, e.g. ba-lora = PiSSA + regularisers);
    the recorded method is the one asked for, the adapter built is `adapter_method`.
    """

    method_choices: ClassVar[tuple[str, ...]] = (*METHODS, *RECIPES)

    method: str = field(
        default="pissa",
        metadata={
            "help": "The adapter and its init, or ba-lora (= PiSSA init with the regularizer_preset's terms). "
            "The λs alone switch the regularisers on, for any method (metrics.json 'trained' records what "
            "ran: ba-lora, pissa, lora+reg, ...)."
        },
    )
    lora_r: int = field(
        default=8, metadata={"help": "Adapter rank r (LoRA/PiSSA/DoRA/LoHa; AdaLoRA target rank)."}
    )
    lora_alpha: float | None = field(
        default=None, metadata={"help": "α: the update is scaled by α/r (None: α = r, scaling 1)."}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input (paper: 0)."})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt (default: q,k,v,o,gate,up,down _proj)."}
    )
    pissa_niter: int | None = field(
        default=None,
        metadata={
            "help": "PiSSA: None = exact SVD, N = randomised SVD with N subspace iterations (pissa_niter_N)."
        },
    )

    def __post_init__(self):
        if self.method not in self.method_choices:
            raise ValueError(
                f"--method must be one of {' | '.join(self.method_choices)}, got {self.method!r}"
            )
        if self.lora_r < 1:
            raise ValueError(f"--lora_r must be >= 1, got {self.lora_r}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"--lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.pissa_niter is not None and self.pissa_niter < 0:
            raise ValueError(f"--pissa_niter must be >= 0 (or unset: exact SVD), got {self.pissa_niter}")

    @property
    def adapter_method(self) -> str:
        """The AdapterConfig.method built: `method`, or the adapter of its recipe."""
        return adapter_of(self.method)

    def to_config(self, **settings: Any) -> AdapterConfig:
        """The AdapterConfig of these arguments; `settings` gives the fields a command adds or resolves
        (init_dir, modules_to_save, an architecture's default target_modules, the AdaLoRA schedule, ...)."""
        own = {
            "method": self.adapter_method,
            "r": self.lora_r,
            "alpha": self.lora_r if self.lora_alpha is None else self.lora_alpha,
            "dropout": self.lora_dropout,
            "target_modules": self.target_modules,
            "pissa_niter": self.pissa_niter,
        }
        return AdapterConfig(**{**own, **settings})


# --- target modules ----------------------------------------------------------------------------------


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct last-name components of the nn.Linear (and GPT-2 Conv1D) modules of a model."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def _matches_module(name: str, target: str) -> bool:
    """peft's rule: a target matches a module whose dotted name equals it or ends with '.' + target."""
    return name == target or name.endswith("." + target)


def _check_target_modules(model: nn.Module, target_modules: list[str]) -> None:
    """Raise if a requested target module does not exist in the model, listing the ones that do.

    Targets may be last names ("query") or dotted suffixes ("attention.output.dense"), as in peft.
    """
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in target_modules if not any(_matches_module(n, t) for n in names)]
    if missing:
        raise ValueError(
            f"target_modules {missing} do not exist in {type(model).__name__}. "
            f"Linear modules available: {linear_module_names(model)}"
        )


def _check_rank_fits(model: nn.Module, target_modules: list[str], r: int, method: str) -> None:
    """A rank-r update B·A of a module has rank at most its smaller side: r above it only adds parameters
    (LoRA, DoRA), and PiSSA cannot initialise it (peft would silently keep fewer directions and then fail
    to load its own adapter). Raise naming the module."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(_matches_module(name, t) for t in target_modules):
            if r > min(module.in_features, module.out_features):
                raise ValueError(
                    f"{_METHOD_NAMES.get(method, method)} rank r = {r} exceeds the smaller side of {name} "
                    f"({module.out_features} x {module.in_features}); use r <= "
                    f"{min(module.in_features, module.out_features)} or fewer target_modules"
                )


_METHOD_NAMES = {"lora": "LoRA", "pissa": "PiSSA", "dora": "DoRA"}


@contextlib.contextmanager
def quiet_peft_wrapping() -> Iterator[None]:
    """peft's PeftModel reads the model's `is_gradient_checkpointing`, deprecated in transformers 5, and so
    prints a FutureWarning on every model it wraps, checkpointing or not: nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def _check_modules_to_save(model: nn.Module, modules_to_save: list[str] | None) -> None:
    if not modules_to_save:
        return
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in modules_to_save if m not in present]
    if missing:
        raise ValueError(f"modules_to_save {missing} do not exist in {type(model).__name__}")


# --- building ----------------------------------------------------------------------------------------


def _peft_config(cfg: AdapterConfig, target_modules: list[str]):
    """The peft config of a peft-backed method."""
    from peft import AdaLoraConfig, LoHaConfig, LoraConfig

    common = dict(target_modules=target_modules, modules_to_save=cfg.modules_to_save)
    if cfg.method in ("lora", "pissa", "dora"):
        if cfg.method == "pissa":
            init = "pissa" if cfg.pissa_niter is None else f"pissa_niter_{cfg.pissa_niter}"
        else:
            init = True
        return LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            init_lora_weights=init,
            use_dora=cfg.method == "dora",
            **common,
        )
    if cfg.method == "loha":
        return LoHaConfig(r=cfg.r, alpha=cfg.alpha, rank_dropout=0.0, module_dropout=cfg.dropout, **common)
    if cfg.method == "adalora":
        if not cfg.adalora_total_step:
            raise ValueError("AdaLoRA needs adalora_total_step (the number of optimizer steps of the run)")
        return AdaLoraConfig(
            target_r=cfg.r,
            init_r=cfg.adalora_init_r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            tinit=cfg.adalora_tinit,
            tfinal=cfg.adalora_tfinal,
            deltaT=cfg.adalora_delta_t,
            total_step=cfg.adalora_total_step,
            **common,
        )
    raise AssertionError(cfg.method)


def _set_trainable(model: nn.Module, predicate) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(bool(predicate(name)))


def _in_modules(name: str, modules: list[str] | None) -> bool:
    return bool(modules) and any(f".{m}." in f".{name}" or name.startswith(f"{m}.") for m in modules)


@dataclass
class BALoRAState:
    """What `prepare_model` records on the model it returns; `reference_mode` and the trainer read it.

    Stored as the plain attribute `balora_state` (not a module or buffer: the snapshot must not enter
    the state dict). Read it with `balora_state(model)`.

    Attributes:
        method: the `AdapterConfig.method` the model was prepared with; it selects how the reference
            is computed.
        reference_snapshot: full and bitfit only: frozen copies of the initial values of the trainable
            parameters, swapped in by `reference_mode`; None for the other methods.
    """

    method: str
    reference_snapshot: dict[str, torch.Tensor] | None = None


def balora_state(model: nn.Module) -> BALoRAState | None:
    """The `BALoRAState` that `prepare_model` set on `model`, or None for a model prepared elsewhere.

    Read from the instance itself, not through `getattr`: a peft wrapper forwards unknown attributes to
    the model it wraps, which may carry a state of its own.
    """
    state = vars(model).get("balora_state")
    return state if isinstance(state, BALoRAState) else None


def reference_is_partitioned(model: nn.Module) -> bool:
    """Whether `model`'s reference is a snapshot of its initial weights (full, BitFit) while DeepSpeed ZeRO-3
    partitions the weights: `reference_mode` cannot swap whole tensors into partitioned parameters, so the
    consistency term is not available there (ZeRO-2 keeps whole parameters on every rank)."""
    state = balora_state(model)
    if state is None or state.reference_snapshot is None:
        return False
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def _snapshot_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """Frozen copies of the initial values of all trainable parameters (the swap-based reference)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def prepare_model(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """Make `model` trainable with `cfg.method` and attach what `reference_mode` needs (a `BALoRAState`).

    Args:
        model: a transformers model (causal LM or sequence classifier). For PiSSA with `cfg.init_dir`
            it must be the residual model saved there.
        cfg: the adapter configuration.

    Returns:
        The model to train (a peft `PeftModel` for peft methods, else the same module).
    """
    target_modules = cfg.target_modules or LLAMA_TARGET_MODULES
    _check_modules_to_save(model, cfg.modules_to_save)

    snapshot = None
    if cfg.method == "full":
        _set_trainable(model, lambda n: True)
        # A full copy of the initial weights is the only exact reference for full FT (docs/method.md §2).
        snapshot = _snapshot_trainable(model)
    elif cfg.method == "bitfit":
        _set_trainable(model, lambda n: n.endswith(".bias") or _in_modules(n, cfg.modules_to_save))
        if not any(p.requires_grad for n, p in model.named_parameters() if n.endswith(".bias")):
            raise ValueError(f"BitFit found no bias parameters in {type(model).__name__}")
        snapshot = _snapshot_trainable(model)
    elif cfg.method in ("hadapter", "padapter"):
        from balora import bottleneck

        style = "houlsby" if cfg.method == "hadapter" else "pfeiffer"
        model = bottleneck.add_bottleneck_adapters(
            model, style=style, reduction_factor=cfg.reduction_factor, modules_to_save=cfg.modules_to_save
        )
    elif cfg.method == "pissa" and cfg.init_dir:
        model = _load_pissa_init(model, cfg.init_dir)
    else:
        from peft import get_peft_model

        _check_target_modules(model, target_modules)
        if cfg.method in ("lora", "pissa", "dora"):
            _check_rank_fits(model, target_modules, cfg.r, cfg.method)
        with quiet_peft_wrapping():
            model = get_peft_model(model, _peft_config(cfg, target_modules))
        if cfg.method == "pissa":
            _add_pissa_reference(model)
    model.balora_state = BALoRAState(method=cfg.method, reference_snapshot=snapshot)
    return model


def _add_pissa_reference(model) -> None:
    """Add the frozen "reference" adapter holding a copy of the initial PiSSA adapter (and initial head)."""
    ref_config = copy.deepcopy(model.peft_config[TRAINED_ADAPTER])
    # init True (B = 0) so that peft does not decompose the already-residual weights a second time;
    # the initial A, B are then copied in below.
    ref_config.init_lora_weights = True
    ref_config.lora_dropout = 0.0
    with warnings.catch_warnings():
        # peft warns that PiSSA should not be combined with other adapters; the reference is a copy of it.
        warnings.simplefilter("ignore")
        model.add_adapter(REFERENCE_ADAPTER, ref_config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f".{REFERENCE_ADAPTER}." in name and ("lora_A" in name or "lora_B" in name):
                source = dict(model.named_parameters())[
                    name.replace(f".{REFERENCE_ADAPTER}.", f".{TRAINED_ADAPTER}.")
                ]
                param.copy_(source)
    _freeze_reference_adapter(model)


def _freeze_reference_adapter(model) -> None:
    model.set_adapter(TRAINED_ADAPTER)
    for name, param in model.named_parameters():
        if f".{REFERENCE_ADAPTER}." in name or name.endswith(f".{REFERENCE_ADAPTER}"):
            param.requires_grad_(False)


def pissa_residual_path(init_dir: str | os.PathLike) -> Path:
    """Where `save_pissa_init` writes the residual model (load the training model from here)."""
    return Path(init_dir) / PISSA_RESIDUAL_MODEL


def pissa_init_adapter_path(init_dir: str | os.PathLike) -> Path:
    """Where `save_pissa_init` writes the initial PiSSA adapter (config says init_lora_weights=True)."""
    return Path(init_dir) / PISSA_INIT_ADAPTER


def pissa_init_complete(init_dir: str | os.PathLike) -> bool:
    return (Path(init_dir) / "COMPLETE").exists()


PISSA_INIT_RECORD = "decomposition.json"


def pissa_init_record(cfg: AdapterConfig, model_id: str, weights_fingerprint: str, dtype: str) -> dict:
    """What a PiSSA decomposition is made from: a saved one may be reused only for exactly these values.

    Args:
        cfg: the PiSSA AdapterConfig of the run (r, alpha, target modules, niter).
        model_id: the model name or path as configured.
        weights_fingerprint: `balora.repro.models.weights_fingerprint` of the weights it decomposes.
        dtype: the dtype the weights are decomposed in (the residual model is saved in it).
    """
    return {
        "model": model_id,
        "weights": weights_fingerprint,
        "r": int(cfg.r),
        "alpha": float(cfg.alpha),
        "target_modules": sorted(cfg.target_modules or LLAMA_TARGET_MODULES),
        "pissa_niter": cfg.pissa_niter,
        "dtype": dtype,
    }


def check_pissa_init(init_dir: str | os.PathLike, expected: dict) -> None:
    """Refuse to reuse a saved decomposition made from other weights or settings than `expected`.

    Raises:
        ValueError: naming every value that differs (or the missing record of an older directory) and the fix.
    """
    path = Path(init_dir) / PISSA_INIT_RECORD
    if not path.exists():
        raise ValueError(
            f"{init_dir} holds a PiSSA decomposition without {PISSA_INIT_RECORD} (what it was made "
            f"from is unknown): delete the directory to decompose again, or choose another init_dir"
        )
    saved = json.loads(path.read_text())
    differs = [
        f"{key}: saved {saved.get(key)!r}, this run {value!r}"
        for key, value in expected.items()
        if saved.get(key) != value
    ]
    if differs:
        raise ValueError(
            f"init_dir {init_dir} holds a PiSSA decomposition made for other settings than this run "
            f"({'; '.join(differs)}). Use an init_dir per model and rank (e.g. "
            f"outputs/pissa_init/<model>_r<r>), or delete it to decompose again."
        )


def save_pissa_init(
    model: nn.Module,
    cfg: AdapterConfig,
    init_dir: str | os.PathLike,
    tokenizer=None,
    record: dict | None = None,
) -> Path:
    """Decompose once (PiSSA) and save residual model + initial adapter to `init_dir` (the paper's init step).

    Args:
        model: the ORIGINAL pre-trained model (modified in place: its weights become the residual).
        cfg: a PiSSA AdapterConfig (its init_dir is ignored here).
        init_dir: output directory; a COMPLETE marker is written last, so a crash never leaves a usable
            half-written decomposition.
        tokenizer: saved beside the residual model when given, so the directory is self-contained.
        record: `pissa_init_record(...)`, written as decomposition.json (checked by `check_pissa_init`).

    Returns:
        The init directory.
    """
    from peft import get_peft_model

    if cfg.method != "pissa":
        raise ValueError(f"save_pissa_init needs method='pissa', got {cfg.method!r}")
    init_dir = Path(init_dir)
    target_modules = cfg.target_modules or LLAMA_TARGET_MODULES
    _check_target_modules(model, target_modules)
    _check_rank_fits(model, target_modules, cfg.r, cfg.method)
    with quiet_peft_wrapping():
        peft_model = get_peft_model(model, _peft_config(cfg, target_modules))
    # Saved with init_lora_weights=True: loading it must not decompose the residual again (eng. notes).
    peft_model.peft_config[TRAINED_ADAPTER].init_lora_weights = True
    peft_model.save_pretrained(pissa_init_adapter_path(init_dir))
    residual = peft_model.unload()  # plain modules holding W_res
    residual.save_pretrained(pissa_residual_path(init_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(pissa_residual_path(init_dir))
    if record is not None:
        (init_dir / PISSA_INIT_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    (init_dir / "COMPLETE").write_text("residual_model/ + pissa_init/ written\n")
    return init_dir


def _load_pissa_init(residual_model: nn.Module, init_dir: str | os.PathLike):
    from peft import PeftModel

    if not pissa_init_complete(init_dir):
        raise FileNotFoundError(
            f"{init_dir} holds no complete PiSSA decomposition (run save_pissa_init first)"
        )
    adapter = pissa_init_adapter_path(init_dir)
    with quiet_peft_wrapping():
        model = PeftModel.from_pretrained(
            residual_model, adapter, adapter_name=TRAINED_ADAPTER, is_trainable=True
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_adapter(adapter, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    _freeze_reference_adapter(model)
    return model


# --- the reference function --------------------------------------------------------------------------


@contextlib.contextmanager
def reference_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, `model(...)` computes the frozen pre-trained function (docs/method.md §2).

    The model is also put in eval mode (no dropout) so the reference is deterministic, and gradients
    are off. Trainable flags and the train/eval mode are restored on exit, even after an exception.
    """
    state = balora_state(model)
    if state is None:
        raise ValueError("reference_mode needs a model returned by balora.adapters.prepare_model")
    method = state.method
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    try:
        with torch.no_grad():
            if method == "pissa":
                # peft's set_adapter flips requires_grad of the adapters it (de)activates: restored below.
                model.set_adapter(REFERENCE_ADAPTER)
                try:
                    yield model
                finally:
                    model.set_adapter(TRAINED_ADAPTER)
            elif method in ("lora", "dora", "loha", "adalora"):
                with model.disable_adapter():
                    yield model
            elif method in ("full", "bitfit"):
                with _swapped_parameters(model, state.reference_snapshot):
                    yield model
            elif method in ("hadapter", "padapter"):
                from balora import bottleneck

                with bottleneck.bottleneck_reference(model):
                    yield model
            else:
                raise AssertionError(method)
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        model.train(was_training)


@contextlib.contextmanager
def _swapped_parameters(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily point parameters at their initial values (a pointer swap, no copy)."""
    params = dict(model.named_parameters())
    current = {}
    for name, initial in snapshot.items():
        current[name] = params[name].data
        params[name].data = initial
    try:
        yield
    finally:
        for name, data in current.items():
            params[name].data = data


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (the paper's #Params column); the frozen reference is not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- saving ------------------------------------------------------------------------------------------


def save_adapter(
    model: nn.Module,
    output_dir: str | os.PathLike,
    initial_adapter_dir: str | os.PathLike | None = None,
    state_dict: dict | None = None,
) -> dict[str, str]:
    """Save the trained adapter and, for PiSSA, its conversion to a plain LoRA on the original base.

    Args:
        model: a model from prepare_model.
        output_dir: the run's output directory.
        initial_adapter_dir: PiSSA only: a directory holding the initial adapter (written by
            save_pissa_init, or by this function itself when None).
        state_dict: the full model state dict when the parameters are partitioned (DeepSpeed ZeRO-3:
            `accelerator.get_state_dict(engine)`, gathered on every rank); None reads the module.

    Returns:
        {"adapter": dir, "adapter_lora": dir} of what was written. `adapter_lora` applies to the original
        pre-trained model (rank 2r for PiSSA; peft's conversion), which is what evaluators load.
    """
    state = balora_state(model)
    method = state.method if state is not None else None
    output_dir = Path(output_dir)
    written = {}
    if method not in PEFT_METHODS:
        return written
    model.save_pretrained(output_dir / "adapter", selected_adapters=[TRAINED_ADAPTER], state_dict=state_dict)
    written["adapter"] = str(output_dir / "adapter")
    if method == "pissa":
        if initial_adapter_dir is None:
            initial_adapter_dir = output_dir / PISSA_INIT_ADAPTER
            _save_reference_as_initial_adapter(model, initial_adapter_dir, state_dict)
        convert_pissa_adapter(output_dir / "adapter", initial_adapter_dir, output_dir / "adapter_lora")
        written["adapter_lora"] = str(output_dir / "adapter_lora")
    elif method in ("lora", "dora"):
        # Already a plain adapter on the original model: the same files, so evaluators need one rule.
        shutil.copytree(output_dir / "adapter", output_dir / "adapter_lora", dirs_exist_ok=True)
        written["adapter_lora"] = str(output_dir / "adapter_lora")
    return written


def convert_pissa_adapter(
    adapter_dir: str | os.PathLike, initial_adapter_dir: str | os.PathLike, output_dir: str | os.PathLike
) -> Path:
    """Turn a trained PiSSA adapter into a plain LoRA of rank 2r that applies to the ORIGINAL model.

    With W = W_res + s·B0·A0 (initial adapter) and the trained W' = W_res + s·B·A (s = alpha/r),
    W' − W = s·(B·A − B0·A0) = s·[B, −B0]·[A; A0]: a rank-2r LoRA with the same scaling (r and alpha
    doubled). This is peft's `path_initial_model_for_weight_conversion` computed from the saved files,
    so it also works after ZeRO-3 training, where the live modules are partitioned. Tested equal to
    peft's conversion.

    Args:
        adapter_dir: the trained adapter (peft format).
        initial_adapter_dir: the initial PiSSA adapter (save_pissa_init / the reference copy).
        output_dir: where the converted adapter is written.
    """
    import json

    from safetensors.torch import load_file, save_file

    adapter_dir, initial_adapter_dir, output_dir = (
        Path(adapter_dir),
        Path(initial_adapter_dir),
        Path(output_dir),
    )
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(
            "convert_pissa_adapter supports plain PiSSA adapters (no rsLoRA, rank or alpha patterns)"
        )
    trained = load_file(adapter_dir / "adapter_model.safetensors")
    initial = load_file(initial_adapter_dir / "adapter_model.safetensors")
    converted = {}
    for key, value in trained.items():
        if ".lora_A." in key:
            converted[key] = torch.cat([value, initial[key].to(value.dtype)], dim=0)  # (2r, in)
        elif ".lora_B." in key:
            converted[key] = torch.cat([value, -initial[key].to(value.dtype)], dim=1)  # (out, 2r)
        else:
            converted[key] = value  # modules_to_save (a task head): already absolute weights
    missing = [k for k in trained if (".lora_A." in k or ".lora_B." in k) and k not in initial]
    if missing:
        raise ValueError(
            f"{initial_adapter_dir} is not the initial adapter of {adapter_dir}: missing {missing[:3]}"
        )
    config.update(r=2 * config["r"], lora_alpha=2 * config["lora_alpha"], init_lora_weights=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in converted.items()},
        output_dir / "adapter_model.safetensors",
        metadata={"format": "pt"},
    )
    (output_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return output_dir


def _save_reference_as_initial_adapter(model, target_dir: Path, state_dict: dict | None = None) -> None:
    """Write the frozen reference adapter (the initial PiSSA A, B) in peft format under `target_dir`."""
    scratch = target_dir.parent / f".{target_dir.name}.tmp"
    model.save_pretrained(scratch, selected_adapters=[REFERENCE_ADAPTER], state_dict=state_dict)
    if target_dir.exists():  # a rerun with --overwrite_output_dir
        shutil.rmtree(target_dir)
    # peft writes non-default adapters into a subfolder named after the adapter.
    os.replace(scratch / REFERENCE_ADAPTER, target_dir)
    shutil.rmtree(scratch)
