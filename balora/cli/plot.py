"""Regenerate the paper's figures from result folders (PDF + PNG).

    balora-plot rank_sweep ablation loss_curves --out_dir results/figures
    balora-plot mini_rank_sweep mini_ablation mini_loss_curves --out_dir results/mini/figures
    (from a checkout: python plot_results.py ..., the same command)

Run names follow balora/repro/results.py (the contract with scripts/*.sh). Points whose runs have not
finished are left out of the lines (and listed on stdout), never invented. The t-SNE figure is made by
balora-tsne --compare (scripts/tsne.sh). --results_dir and --out_dir default to results/ and
results/figures/ of the checkout (of the working directory when installed).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import pandas as pd

from balora.cli.command import project_root, run_command
from balora.repro import plots
from balora.repro import results as R
from balora.repro.studies import MINI_AXES, STUDIES, labelled

REPO_ROOT = project_root()
BENCH_LABELS = {"gsm8k": "GSM8K", "math": "MATH", "gsm8k_nll": "GSM8K solution NLL (lower is better)"}
BENCH_YLABELS = {"gsm8k_nll": "NLL (nats/token)"}
SWEEP_METHODS = (("lora", "LoRA"), ("pissa", "PiSSA"), ("ba-lora", "BA-LoRA"))
NLG_METHODS = labelled(STUDIES["nlg_table"].axes["methods"])
MINI_NLG_METHODS = labelled(("full", *MINI_AXES["nlg_methods"]))
RANKS = tuple(int(rank) for rank in STUDIES["rank_sweep"].axes["ranks"])
MINI_MAIN_RANK = 16  # the main mini table's LoRA rank: the mini rank sweep reuses its runs
MINI_RANKS = tuple(sorted(int(rank) for rank in (*MINI_AXES["ranks"], MINI_MAIN_RANK)))


def point(cell: R.Cell) -> tuple[float, float | None] | None:
    """(mean, std) of a cell for plotting, None when no seed finished."""
    return (cell.mean, cell.std) if cell.n else None


def aggregate_cell(
    run: pd.DataFrame | None, metric: str, seeds: tuple[int, ...] = (), scale: float = 1.0
) -> R.Cell:
    """`metric` over the seeds of one run's rows (None: the run does not exist -> an empty cell)."""
    rows = R.metric_values(run, metric, seeds, scale)
    return R.Cell.of(rows.set_index("seed")["value"], seeds, rows["protocol"].iloc[0] if len(rows) else None)


def load_histories(results_root: str | Path, run: str, seeds: tuple[int, ...] = ()) -> list[list[dict]]:
    """The log_history.json of each finished seed of "<study>:<run>" (seeds without one are skipped)."""
    run_dir = Path(results_root) / run.replace(":", "/")
    finished = R.load_run(run_dir)[0] if run_dir.is_dir() else {}
    paths = [r.path / "log_history.json" for s, r in sorted(finished.items()) if not seeds or s in seeds]
    return [R.read_json(path, list) for path in paths if path.is_file()]


def _sweep_run(
    study: str, model: str, method: str, rank: int, main_rank: int | None, main_study: str | None
) -> str:
    # The mini sweep reuses the main mini table's runs at its rank instead of training them twice.
    if main_rank is not None and rank == main_rank:
        return f"{main_study}:{model}_{method}"
    return f"{study}:{model}_{method}_r{rank}"


def rank_sweep_figure(
    results_dir: Path,
    out_dir: Path,
    study: str,
    models: dict[str, str],
    benches: tuple[str, ...],
    ranks: tuple[int, ...],
    seeds: tuple[int, ...],
    main_rank: int | None = None,
    main_study: str | None = None,
    name: str = "rank_sweep",
) -> list[Path]:
    """Accuracy vs rank for each (model, benchmark); Full FT from run <model>_full."""
    cache = R.StudyCache(results_dir, study)
    panels, full_ft, missing, ylabels = {}, {}, [], {}
    for model, model_label in models.items():
        for bench in benches:
            title = f"{model_label} / {BENCH_LABELS.get(bench, bench)}"
            metric = f"{bench}.score"
            panels[title] = {}
            ylabels[title] = BENCH_YLABELS.get(bench, "accuracy (%)")
            for method, label in SWEEP_METHODS:
                points = {}
                for rank in ranks:
                    run = _sweep_run(study, model, method, rank, main_rank, main_study)
                    cell = aggregate_cell(cache.run(run), metric, seeds)
                    if cell.n:
                        points[rank] = point(cell)
                    else:
                        missing.append(run)
                panels[title][label] = points
            full_run = f"{main_study or study}:{model}_full"
            full_ft[title] = point(aggregate_cell(cache.run(full_run), metric, seeds))
    if missing:
        print(f"{name}: runs without results (left out): {sorted(set(missing))}")
    if not any(points for methods in panels.values() for points in methods.values()):
        print(f"{name}: no finished runs under {results_dir / study}; nothing to plot")
        return []
    return plots.rank_sweep(panels, full_ft, out_dir / name, ylabel=ylabels)


def ablation_figure(results_dir: Path, out_dir: Path, table: str, name: str) -> list[Path]:
    """Bars of the ablation table: one panel per metric (and model, when rows are grouped by model),
    one bar per variant."""
    result = R.build_table(R.TABLES[table](), results_dir)
    spec = result.spec
    metrics: dict[str, dict[str, tuple[float, float | None] | None]] = {}
    for col in spec.columns:
        for row in spec.rows:
            panel = f"{col.label} ({row.group})" if row.group else col.label
            metrics.setdefault(panel, {})[row.label] = point(result.cells[row.key][col.key])
    if not any(v for values in metrics.values() for v in values.values()):
        print(f"{name}: no finished runs for table {table}; nothing to plot")
        return []
    variants = list(dict.fromkeys(row.label for row in spec.rows))
    return plots.ablation_bars(variants, metrics, out_dir / name)


def loss_curve_figure(
    results_dir: Path, out_dir: Path, runs: dict[str, str], seeds: tuple[int, ...], name: str
) -> list[Path]:
    """Task loss and each regulariser term over steps for the given runs ({label: "<study>:<run>"})."""
    histories = {label: load_histories(results_dir, run, seeds) for label, run in runs.items()}
    histories = {label: h for label, h in histories.items() if h}
    if not histories:
        print(f"{name}: no log_history.json under {results_dir} for {list(runs.values())}; nothing to plot")
        return []
    return plots.loss_curves(histories, out_dir / name)


def probe_sweep_figure(
    results_dir: Path,
    out_dir: Path,
    table: str,
    place,
    name: str,
    xlabel: str,
    log_base: int | None,
    reference_row: str | None = None,
) -> list[Path]:
    """A probe table drawn as lines against the swept setting.

    Args:
        place: (row, column) -> (panel title, line label, x) for each cell to draw, or None to skip it.
        reference_row: a row drawn as the dashed reference of each of its panels (PiSSA, λ = 0).
    """
    result = R.build_table(R.TABLES[table](), results_dir)
    panels: dict[str, dict[str, dict[float, tuple[float, float | None]]]] = {}
    references: dict[str, tuple[float, float | None] | None] = {}
    for row in result.spec.rows:
        for col in result.spec.columns:
            where = place(row, col)
            if where is None:
                continue
            panel, line, x = where
            mean_std = point(result.cells[row.key][col.key])
            if row.key == reference_row:
                references[panel] = mean_std
                continue
            points = panels.setdefault(panel, {}).setdefault(line, {})
            if mean_std is not None:
                points[x] = mean_std
    if not any(points for lines in panels.values() for points in lines.values()):
        print(f"{name}: no finished runs for table {table}; nothing to plot")
        return []
    ylabels = {panel: "NLL (nats/token)" if "NLL" in panel else "%" for panel in panels}
    reference_label = next((r.label for r in result.spec.rows if r.key == reference_row), "reference")
    return plots.rank_sweep(
        panels,
        references,
        out_dir / name,
        ylabel=ylabels,
        xlabel=xlabel,
        log_base=log_base,
        reference_label=reference_label,
    )


def _imbalance_cell(row, col):
    """mini_imbalance: column keys recall19, bacc19, f119, ... -> (metric panel, method, ratio)."""
    metric, ratio = re.fullmatch(r"(recall|bacc|f1|auroc)(\d+)", col.key).groups()
    panel = {
        "recall": "minority (positive) recall",
        "bacc": "balanced accuracy",
        "f1": "macro-F1",
        "auroc": "AUROC (threshold-free)",
    }[metric]
    return panel, row.label, int(ratio)


def _label_noise_cell(row, col):
    """mini_label_noise: column keys are the flipped percentages (0 = the clean main runs)."""
    return "clean-dev accuracy (SST-2)", row.label, float(col.key)


def _lambda_scale_cell(row, col):
    """mini_lambda_scale: rows are λ scales (and PiSSA); the train-loss column is not drawn."""
    if col.key == "train_loss":
        return None
    panel = {"gsm8k_nll": "GSM8K solution NLL (lower is better)", "gsm8k": "GSM8K accuracy"}[col.key]
    return panel, "BA-LoRA", 0.0 if row.key == "pissa" else float(row.key)


SEEDS = (42, 1024, 2024)
FIGURES = {
    "rank_sweep": lambda rd, od: rank_sweep_figure(
        rd,
        od,
        "rank_sweep",
        {"llama2-7b": "LLaMA-2-7B", "mistral-7b": "Mistral-7B"},
        ("gsm8k", "math"),
        RANKS,
        SEEDS,
    ),
    "ablation": lambda rd, od: ablation_figure(rd, od, "ablation", "ablation"),
    "ablation_glue": lambda rd, od: ablation_figure(rd, od, "ablation_glue", "ablation_glue"),
    "loss_curves": lambda rd, od: loss_curve_figure(
        rd, od, {label: f"nlg:llama2-7b_{m}_metamath" for m, label in NLG_METHODS}, SEEDS, "loss_curves"
    ),
    # The same at r = 32 (the rank sweep's runs; the NLG table trains at r = 128).
    "loss_curves_r32": lambda rd, od: loss_curve_figure(
        rd,
        od,
        {label: f"rank_sweep:llama2-7b_{m}_r32" for m, label in NLG_METHODS if m != "full"},
        SEEDS,
        "loss_curves_r32",
    ),
    "mini_rank_sweep": lambda rd, od: rank_sweep_figure(
        rd,
        od,
        "mini/rank_sweep",
        {R.MINI_NLG_MODEL: "SmolLM2-135M-Instruct"},
        (
            "gsm8k_nll",
        ),  # the NLL only: 0-3% accuracy on 64 questions does not rank the ranks (results/README.md)
        MINI_RANKS,
        SEEDS,
        main_rank=MINI_MAIN_RANK,
        main_study="mini/nlg",
        name="mini_rank_sweep",
    ),
    "mini_ablation": lambda rd, od: ablation_figure(rd, od, "mini_ablation", "mini_ablation"),
    # Minority recall, balanced accuracy, macro-F1 and AUROC against the imbalance ratio (SST-2, MiniLM).
    "mini_imbalance": lambda rd, od: probe_sweep_figure(
        rd,
        od,
        "mini_imbalance",
        _imbalance_cell,
        "mini_imbalance",
        xlabel="majority : minority ratio",
        log_base=10,
    ),
    # Clean-dev accuracy against the share of flipped training labels (SST-2, MiniLM).
    "mini_label_noise": lambda rd, od: probe_sweep_figure(
        rd,
        od,
        "mini_label_noise",
        _label_noise_cell,
        "mini_label_noise",
        xlabel="training labels flipped (%)",
        log_base=None,
    ),
    # GSM8K solution NLL against the λ scale, PiSSA (λ = 0) dashed.
    "mini_lambda_scale": lambda rd, od: probe_sweep_figure(
        rd,
        od,
        "mini_lambda_scale",
        _lambda_scale_cell,
        "mini_lambda_scale",
        xlabel="λ scale (× the iclr2026 NLG preset)",
        log_base=10,
        reference_row="pissa",
    ),
    "mini_loss_curves": lambda rd, od: loss_curve_figure(
        rd,
        od,
        {label: f"mini/nlg:{R.MINI_NLG_MODEL}_{m}" for m, label in MINI_NLG_METHODS},
        SEEDS,
        "mini_loss_curves",
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("figures", nargs="+", choices=sorted(FIGURES), help="which figures to draw")
    parser.add_argument(
        "--results_dir", default=str(REPO_ROOT / "results"), help="root holding <study>/ folders"
    )
    parser.add_argument("--out_dir", default=str(REPO_ROOT / "results" / "figures"), help="where pdf/png go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    """Draw the figures; returns {figure: [written paths]} (empty list: nothing finished yet).

    The figures are drawn into a scratch folder and moved into --out_dir only when all of them were
    drawn: an unreadable result file leaves the existing figures as they were.

    Raises:
        ResultsError: a result file cannot be read.
    """
    args = parse_args(argv)
    results_dir, out_dir = Path(args.results_dir), Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".drawing-") as scratch:
        drawn = {name: FIGURES[name](results_dir, Path(scratch)) for name in args.figures}
        for name, paths in drawn.items():
            written[name] = []
            for path in paths:
                target = out_dir / Path(path).relative_to(scratch)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                written[name].append(str(target))
                print(f"wrote {target}")
    return written


def cli() -> int:
    """Console entry point `balora-plot` (and `python plot_results.py`): returns the exit status."""
    return run_command(main)


if __name__ == "__main__":
    sys.exit(cli())
