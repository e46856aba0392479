"""Bottleneck adapters (the HAdapter / PAdapter baselines of the paper's NLU table), implemented here.

The maintained `adapters` package (1.3.0) pins `transformers~=4.57.6` and cannot be installed next to
our transformers 5.24, so the two baselines are implemented minimally:

* Houlsby et al. 2019 ("hadapter"): an adapter after the attention output projection and one after
  the FFN output projection of every layer, swish nonlinearity; the layer norms are trained too
  (Houlsby §2.1: "we also train the layer normalization parameters").
* Pfeiffer et al. 2021 ("padapter", AdapterFusion's adapter): one adapter after the FFN output
  projection only, ReLU nonlinearity; layer norms stay frozen.

Each adapter is h -> h + W_up · act(W_down · h + b_down) + b_up, with W_down: (m, H), W_up: (H, m),
m = H // reduction_factor. W_up and b_up start at zero, so the adapted model computes exactly the
pre-trained function at step 0. The adapter sits on the output of the projection, before the
block's dropout + residual + LayerNorm (the original places it after the dropout; dropout is the
identity at evaluation, and the difference in training is only where dropout noise enters).

Supported layouts (matched by module name): BERT / RoBERTa / DeBERTa-v2 (`attention.output.dense`,
`layer.N.output.dense`), GPT-2 (`attn.c_proj`, `mlp.c_proj`), T5 (`layer.0.SelfAttention.o`,
`DenseReluDense.wo`).

Shapes: B batch, T tokens, H hidden size, m bottleneck size.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch
from torch import nn

STYLES = ("houlsby", "pfeiffer")

# Output projections of the attention block and of the FFN block, per supported architecture.
ATTENTION_OUTPUT = re.compile(r"(attention\.output\.dense|attn\.c_proj|layer\.0\.SelfAttention\.o)$")
FFN_OUTPUT = re.compile(r"(layer\.\d+\.output\.dense|mlp\.c_proj|DenseReluDense\.wo)$")

_STATE_ATTR = "_balora_bottleneck"


class BottleneckAdapter(nn.Module):
    """h -> h + up(act(down(h))), with `up` zero-initialised (identity at init).

    Args:
        hidden_size: H, the width of the wrapped projection's output.
        bottleneck_size: m.
        nonlinearity: "swish" (Houlsby) or "relu" (Pfeiffer).
    """

    def __init__(self, hidden_size: int, bottleneck_size: int, nonlinearity: str):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.up = nn.Linear(bottleneck_size, hidden_size)
        if nonlinearity == "swish":
            self.act = nn.SiLU()
        elif nonlinearity == "relu":
            self.act = nn.ReLU()
        else:
            raise ValueError(f"nonlinearity must be 'swish' or 'relu', got {nonlinearity!r}")
        nn.init.zeros_(self.down.bias)
        # Zero up-projection: the residual branch contributes nothing until trained, so the frozen
        # initial function is exactly the pre-trained one (this is what makes the reference exact).
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.bypass = False

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T, H)
        if self.bypass:
            return hidden
        return hidden + self.up(self.act(self.down(hidden)))


class AdaptedProjection(nn.Module):
    """A frozen projection followed by a bottleneck adapter; attribute access falls through to it."""

    def __init__(self, base: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.base(*args, **kwargs))

    def __getattr__(self, name: str):
        # Model code sometimes reads attributes of the projection (e.g. `.weight`, GPT-2's `.nf`).
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if not modules or "base" not in modules:  # during copy/unpickling
                raise
            return getattr(modules["base"], name)


def _output_width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if hasattr(module, "nf"):  # transformers' Conv1D (GPT-2)
        return int(module.nf)
    raise TypeError(f"cannot place an adapter after a {type(module).__name__}: unknown output width")


def _is_layer_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("LayerNorm")


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _matches(name: str, entry: str) -> bool:
    return name == entry or name.endswith("." + entry)


def add_bottleneck_adapters(
    model: nn.Module, style: str, reduction_factor: int, modules_to_save: list[str] | tuple[str, ...] = ()
) -> nn.Module:
    """Insert bottleneck adapters into every transformer layer and freeze everything else.

    Trainable afterwards: the adapters, the `modules_to_save` (the task head) and, for Houlsby, every
    layer norm. The initial values of the trainable non-adapter parameters are kept (CPU copies) so
    that `bottleneck_reference` can reproduce the frozen initial function, head included.

    Args:
        model: a BERT/RoBERTa/DeBERTa-v2/GPT-2/T5 model (any head).
        style: "houlsby" (attention + FFN adapters, layer norms trained) or "pfeiffer" (FFN only).
        reduction_factor: m = H // reduction_factor.
        modules_to_save: names (or name suffixes) of modules trained in full, e.g. ["classifier"].

    Returns:
        The same model, modified in place.

    Raises:
        ValueError: unknown style, bad reduction factor, no matching projections (the message lists
        the model's Linear modules), a `modules_to_save` entry matching nothing, adapters already added.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if reduction_factor < 1:
        raise ValueError(f"reduction_factor must be >= 1, got {reduction_factor}")
    if hasattr(model, _STATE_ATTR):
        raise ValueError("bottleneck adapters were already added to this model")

    patterns = (ATTENTION_OUTPUT, FFN_OUTPUT) if style == "houlsby" else (FFN_OUTPUT,)
    targets = [name for name, _ in model.named_modules() if any(p.search(name) for p in patterns)]
    if not targets:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) or hasattr(m, "nf")]
        raise ValueError(
            f"no attention/FFN output projections found for {style} adapters in {type(model).__name__}; "
            f"supported layouts: BERT/RoBERTa/DeBERTa-v2, GPT-2, T5. Linear modules present: {linears[:12]}"
            + (" ..." if len(linears) > 12 else "")
        )

    model.requires_grad_(False)
    nonlinearity = "swish" if style == "houlsby" else "relu"
    for name in targets:
        base = model.get_submodule(name)
        width = _output_width(base)
        adapter = BottleneckAdapter(width, max(1, width // reduction_factor), nonlinearity)
        weight = next(base.parameters())
        adapter.to(device=weight.device, dtype=weight.dtype)
        _set_submodule(model, name, AdaptedProjection(base, adapter))

    for module in model.modules():
        if isinstance(module, BottleneckAdapter):
            module.requires_grad_(True)
    if style == "houlsby":
        for module in model.modules():
            if _is_layer_norm(module):
                module.requires_grad_(True)
    for entry in modules_to_save:
        hits = [m for n, m in model.named_modules() if _matches(n, entry)]
        if not hits:
            top = [n for n, _ in model.named_children()]
            raise ValueError(f"modules_to_save entry {entry!r} matches no module; top-level modules: {top}")
        for module in hits:
            module.requires_grad_(True)

    initial = {
        name: param.detach().to("cpu", copy=True)
        for name, param in model.named_parameters()
        if param.requires_grad and ".adapter." not in name
    }
    # A plain attribute (not a buffer): the initial values must not enter the state dict.
    object.__setattr__(model, _STATE_ATTR, {"style": style, "initial": initial, "targets": targets})
    return model


@contextlib.contextmanager
def bottleneck_reference(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` as its frozen initial function: adapters bypassed, initial head and layer norms.

    Exact, because the up-projections start at zero. Use for the reference forward only (under
    torch.no_grad); the trained values are restored on exit, before any backward pass.
    """
    state = getattr(model, _STATE_ATTR, None)
    if state is None:
        raise ValueError("model has no bottleneck adapters (call add_bottleneck_adapters first)")
    adapters = [m for m in model.modules() if isinstance(m, BottleneckAdapter)]
    params = dict(model.named_parameters())
    swapped: dict[str, torch.Tensor] = {}
    try:
        for module in adapters:
            module.bypass = True
        with torch.no_grad():
            for name, initial in state["initial"].items():
                param = params[name]
                swapped[name] = param.data
                param.data = initial.to(device=param.device, dtype=param.dtype)
        yield model
    finally:
        for name, trained in swapped.items():
            params[name].data = trained
        for module in adapters:
            module.bypass = False
