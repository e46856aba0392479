"""The ablation figure with rows grouped by model: one panel per metric and model, no variant overwritten."""

from test_results import write_run  # noqa: E402

import plot_results
from balora.repro import plots


def test_grouped_ablation_draws_one_panel_per_metric_and_model(tmp_path, monkeypatch):
    results = tmp_path / "results"
    for model, base in (("llama2-7b", 50.0), ("mistral-7b", 70.0)):
        for i, variant in enumerate(("noreg", "all")):
            write_run(
                results,
                "ablation",
                f"{model}_{variant}",
                42,
                {},
                evals={"gsm8k": {"score": base + i, "n": 1319}, "math": {"score": base / 10 + i, "n": 5000}},
            )
    seen = {}

    def fake_bars(variants, metrics, out_stem, **kwargs):
        seen.update(variants=variants, metrics=metrics)
        return []

    monkeypatch.setattr(plots, "ablation_bars", fake_bars)
    plot_results.main(["ablation", "--results_dir", str(results), "--out_dir", str(tmp_path / "fig")])
    assert seen["variants"] == [
        "w/o reg (PiSSA)",
        "consistency only",
        "diversity only",
        "SVD only",
        "BA-LoRA (all three)",
    ]
    assert seen["metrics"]["GSM8K (LLaMA-2-7B)"]["w/o reg (PiSSA)"][0] == 50.0
    assert seen["metrics"]["GSM8K (Mistral-7B)"]["BA-LoRA (all three)"][0] == 71.0
    assert seen["metrics"]["MATH (Gemma-7B)"]["SVD only"] is None  # not run: drawn as "missing"
