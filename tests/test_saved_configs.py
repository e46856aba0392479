"""Every committed run config (results/**/config.yaml) loads back into the arguments of the command that
wrote it: renamed or restructured arguments must keep the runs behind the published numbers readable."""

from pathlib import Path

import pytest
import yaml

from balora import adapters
from balora.cli import finetune_glue, train_nlg
from balora.repro.config import SAFE_YAML_LOADER, load_saved_config

REPO = Path(__file__).resolve().parent.parent
SAVED = sorted((REPO / "results").rglob("config.yaml"))


def test_there_are_saved_configs_to_load():
    assert len(SAVED) > 100


@pytest.mark.parametrize("path", SAVED, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_a_saved_config_loads_through_the_commands_arguments(path):
    values = yaml.load(path.read_text(), Loader=SAFE_YAML_LOADER)
    glue = "task_name" in values
    classes = finetune_glue.ARGUMENT_CLASSES if glue else train_nlg.ARGUMENT_CLASSES
    # A GPU run's config (bf16) is read here on the CPU: TrainingArguments refuses bf16 without a GPU.
    device = {"use_cpu": True} if values.get("bf16") and not values.get("use_cpu") else {}
    *_, adapter_args, args = load_saved_config(path, classes, overrides=device)
    assert isinstance(adapter_args, adapters.AdapterArguments)
    assert adapter_args.method == values["method"]
    config = adapter_args.to_config() if not glue else adapter_args.to_config("bert", total_steps=100)
    assert config.method == adapters.adapter_of(values["method"]) and config.r == values["lora_r"]
    assert args.regularizer_preset == values["regularizer_preset"]
    for term in ("consistency", "diversity", "svd"):
        assert getattr(args, f"lambda_{term}") == values[f"lambda_{term}"]
