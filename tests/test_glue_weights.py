"""finetune_glue.py saves its weights (peft / transformers formats) and refuses to replace a finished run.

Each saved model is loaded back on a fresh base and re-scores the validation set to the run's final score.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_glue_run import TINY, _tiny_glue
from transformers import DataCollatorWithPadding

import finetune_glue
from balora import adapters
from balora.repro import glue


def _run(out: Path, glue_dir: Path, method: str, *flags: str) -> dict:
    extra = ["--regularizer_preset", "iclr2026"] if method == "ba-lora" else []
    return finetune_glue.main(
        [
            "--task_name",
            "stsb",
            "--glue_dir",
            str(glue_dir),
            "--model_name_or_path",
            "tiny-bert",
            "--method",
            method,
            *extra,
            "--output_dir",
            str(out),
            *TINY,
            "--max_steps",
            "1",
            *flags,
        ]
    )


def _score(model, glue_dir: Path) -> float:
    """STS-B Pearson/Spearman score of `model` on the tiny validation split."""
    spec = glue.get_task("stsb")
    _, tokenizer = glue.load_classifier("tiny-bert", spec)
    ds = glue.tokenize_dataset(glue.load_glue_split(spec, "validation", glue_dir), tokenizer, 128)
    keep = [*glue.model_input_columns(model.config), "labels"]
    batch = DataCollatorWithPadding(tokenizer)(ds.select_columns(keep).to_list())
    labels = batch.pop("labels").numpy()
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits.numpy()
    return glue.compute_metrics(spec, logits, labels)["score"]


def _fresh_base(seed: int = 42):
    model, _ = glue.load_classifier("tiny-bert", glue.get_task("stsb"), seed=seed)
    return model


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory) -> Path:
    return _tiny_glue(tmp_path_factory.mktemp("glue"))


def test_saved_weights_reload_and_a_finished_run_is_replaced_only_on_request(glue_dir, tmp_path):
    from peft import PeftModel

    out = tmp_path / "run"
    metrics = _run(out, glue_dir, "bitfit")
    # Full-model methods: model/ is a transformers classifier.
    assert json.loads((out / "metrics.json").read_text())["weights"] == {"model": str(out / "model")}
    model = glue.load_classifier(str(out / "model"), glue.get_task("stsb"))[0]
    assert np.isfinite(metrics["final_score"])
    assert _score(model, glue_dir) == pytest.approx(metrics["final_score"], abs=1e-4)

    before = {name: (out / name).read_bytes() for name in ("metrics.json", "config.yaml", "run.json")}
    with pytest.raises(FileExistsError, match="finished run"):
        _run(out, glue_dir, "ba-lora")
    assert {name: (out / name).read_bytes() for name in before} == before

    metrics = _run(out, glue_dir, "ba-lora", "--overwrite_output_dir")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["weights"] == {"adapter": str(out / "adapter"), "adapter_lora": str(out / "adapter_lora")}
    # adapter_lora (rank 2r, with the trained head) applies to the original pre-trained model: what others
    # load. The conversion reorders float32 sums, so the score agrees to 1e-2 points, not bit for bit.
    model = PeftModel.from_pretrained(_fresh_base(), out / "adapter_lora")
    assert _score(model, glue_dir) == pytest.approx(metrics["final_score"], abs=1e-2)


def test_bottleneck_adapters_reload_into_the_prepared_model(glue_dir, tmp_path):
    """hadapter / padapter: model/ holds the classifier and its adapters (strict state-dict load)."""
    out = tmp_path / "run"
    metrics = _run(out, glue_dir, "padapter")
    model = adapters.prepare_model(
        _fresh_base(),
        adapters.AdapterConfig(method="padapter", modules_to_save=glue.default_modules_to_save("bert")),
    )
    model.load_state_dict(load_file(out / "model" / "model.safetensors"), strict=True)
    assert _score(model, glue_dir) == pytest.approx(metrics["final_score"], abs=1e-4)
