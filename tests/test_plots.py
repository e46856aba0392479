"""Figures from synthetic results: each plotting function writes a PDF and a PNG."""

import json

import pytest
from test_results import SEEDS, write_run

from balora.cli import plot as plot_results
from balora.repro import plots


def _check(paths):
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    for path in paths:
        assert path.stat().st_size > 1000
    assert paths[0].read_bytes()[:4] == b"%PDF" and paths[1].read_bytes()[:4] == b"\x89PNG"


def test_rank_sweep_writes_pdf_and_png(tmp_path):
    panels = {
        "M / GSM8K": {
            "LoRA": {1: (10.0, 1.0), 4: (12.0, 0.5), 16: (15.0, None)},
            "BA-LoRA": {1: (11.0, 1.0), 16: (16.0, 0.2)},
        },
        "M / MATH": {"LoRA": {}, "BA-LoRA": {4: (3.0, 0.1)}},  # a method without any finished rank
    }
    _check(plots.rank_sweep(panels, {"M / GSM8K": (20.0, 0.5), "M / MATH": None}, tmp_path / "fig" / "sweep"))


def test_ablation_bars_with_a_missing_value(tmp_path):
    metrics = {
        "GSM8K": {"w/o reg": (10.0, 1.0), "all": (12.0, None)},
        "GLUE avg": {"w/o reg": (80.0, 0.3), "all": None},
    }
    _check(plots.ablation_bars(["w/o reg", "all"], metrics, tmp_path / "abl"))


def test_ablation_bars_zoom_on_small_differences_and_draw_no_error_bar_for_one_seed(tmp_path, monkeypatch):
    figures = []
    original = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, stem: figures.append(fig) or original(fig, stem))
    metrics = {
        "NLL": {"w/o reg": (1.0916, None), "all": (1.0919, None)},  # one seed each: no spread known
        "GLUE avg": {"w/o reg": (50.2, 0.4), "all": (50.4, 0.1)},
    }
    _check(plots.ablation_bars(["w/o reg", "all"], metrics, tmp_path / "abl"))
    nll_axis, glue_axis = figures[0].axes
    low, high = nll_axis.get_ylim()
    assert 1.05 < low < 1.0916 and 1.0919 < high < 1.15  # a 0.0003 difference stays visible

    def drawn_error_bars(axis):  # non-empty vertical segments of the bars' error bars
        return sum(
            len(seg) > 0
            for bars in axis.containers
            if getattr(bars, "errorbar", None)
            for lines in bars.errorbar.lines[2]
            for seg in lines.get_segments()
        )

    assert drawn_error_bars(nll_axis) == 0 and drawn_error_bars(glue_axis) == 2
    glue_low, glue_high = glue_axis.get_ylim()
    assert glue_low < 50.2 - 0.4 and glue_high > 50.4 + 0.1  # the error bars fit inside the axis


def test_loss_curves_mean_over_seeds(tmp_path):
    def history(offset):
        return [
            {
                "step": s,
                "loss": 2.0 - 0.1 * s + offset,
                "task_loss": 1.9 - 0.1 * s,
                "consistency_loss": 0.01 * s,
                "diversity_loss": -2.5,
                "svd_loss": -0.9,
                "epoch": s / 10,
            }
            for s in range(1, 11)
        ] + [{"step": 10, "train_runtime": 3.0}]  # the final summary entry has no loss terms

    steps, values = plots.history_series(history(0.0), "consistency_loss")
    assert steps.tolist() == list(range(1, 11)) and values[-1] == pytest.approx(0.1)
    _check(
        plots.loss_curves(
            {"BA-LoRA": [history(0.0), history(0.1)], "LoRA": [history(0.2)]}, tmp_path / "loss"
        )
    )
    with pytest.raises(ValueError, match="none of"):
        plots.loss_curves({"x": [[{"step": 1, "foo": 1.0}]]}, tmp_path / "none")


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. an empty panel asked for a legend
def test_plot_results_cli_on_synthetic_mini_results(tmp_path):
    results = tmp_path / "results"
    hist = [
        {
            "step": s,
            "loss": 1.0 / s,
            "task_loss": 1.0 / s,
            "consistency_loss": 0.0,
            "diversity_loss": -1.0,
            "svd_loss": -0.5,
        }
        for s in range(1, 6)
    ]
    for seed in SEEDS:
        for method, score in (("lora", 10.0), ("pissa", 11.0), ("ba-lora", 12.0)):
            write_run(
                results,
                "mini/nlg",
                f"smollm2_{method}",
                seed,
                {"train_loss": 1.0},
                evals={"gsm8k_nll": {"score": 1.0 + score / 100 + seed % 3, "n": 64}},
                history=hist,
            )
        for task in ("mrpc", "stsb"):  # the ablation's GLUE avg end points (PiSSA, BA-LoRA main runs)
            write_run(results, "mini/nlu", f"{task}_pissa", seed, {"score": 70.0})
            write_run(results, "mini/nlu", f"{task}_ba-lora", seed, {"score": 71.0})
    write_run(
        results, "mini/rank_sweep", "smollm2_lora_r4", 42, {}, evals={"gsm8k_nll": {"score": 1.2, "n": 64}}
    )
    write_run(results, "mini/ablation", "smollm2_svd", 42, {}, evals={"gsm8k_nll": {"score": 1.1, "n": 64}})
    out = tmp_path / "figs"
    written = plot_results.main(
        [
            "mini_rank_sweep",
            "mini_ablation",
            "mini_loss_curves",
            "--results_dir",
            str(results),
            "--out_dir",
            str(out),
        ]
    )
    for name in ("mini_rank_sweep", "mini_ablation", "mini_loss_curves"):
        assert sorted(written[name]) == [str(out / f"{name}.pdf"), str(out / f"{name}.png")]
    # With nothing finished a figure is skipped, not drawn empty.
    assert plot_results.main(
        ["rank_sweep", "--results_dir", str(tmp_path / "empty"), "--out_dir", str(out)]
    ) == {"rank_sweep": []}
    assert json.dumps(written)


def test_the_committed_mini_runs_draw_every_mini_figure(tmp_path):
    """The figure steps of scripts/mini.sh and mini_probes.sh on the committed results (a mixed-protocol
    panel, a missing metric or a corrupt file would stop them at the end of a sweep)."""
    from pathlib import Path

    results = Path(__file__).resolve().parent.parent / "results"
    names = ["mini_rank_sweep", "mini_ablation", "mini_loss_curves"]
    names += ["mini_imbalance", "mini_label_noise", "mini_lambda_scale"]  # scripts/mini_probes.sh
    written = plot_results.main([*names, "--results_dir", str(results), "--out_dir", str(tmp_path)])
    for name in names:
        assert sorted(written[name]) == [str(tmp_path / f"{name}.pdf"), str(tmp_path / f"{name}.png")]


def test_cli_answers_an_unreadable_result_with_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    write_run(results, "mini/nlg", "smollm2_lora", SEEDS[0], {"train_loss": 1.0}, history=[{"step": 1}])
    (results / "mini" / "nlg" / "smollm2_lora" / f"seed{SEEDS[0]}" / "metrics.json").write_text("{not json")
    out = tmp_path / "figs"
    argv = ["balora-plot", "mini_loss_curves", "--results_dir", str(results), "--out_dir", str(out)]
    monkeypatch.setattr("sys.argv", argv)
    assert plot_results.cli() == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics.json" in err and err.count("\n") == 1
    assert not list(out.glob("*.p*"))  # nothing drawn
