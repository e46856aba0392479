"""Named methods that are an adapter plus regularisers, without torch: the result tables compare the configs
of a run's seeds by the adapter each builds (balora.repro.results), and reading them must not load torch.

BA-LoRA is PiSSA initialisation trained with the regularisers of a `regularizer_preset` (or explicit λs); a
preset with every λ set to 0 is the paper's "w/o reg" ablation, i.e. PiSSA.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """A named method that is an adapter plus regularisers: what it builds and where its λs come from."""

    adapter: str  # the AdapterConfig.method it builds
    description: str


RECIPES = {"ba-lora": Recipe(adapter="pissa", description="PiSSA init + the regularizer_preset's terms")}


def adapter_of(method: str) -> str:
    """The adapter that `method` (an adapter method or a recipe name) builds: "pissa" for "ba-lora"."""
    return RECIPES[method].adapter if method in RECIPES else method
