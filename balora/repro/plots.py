"""The paper's figures from aggregated results (matplotlib, each written as PDF and PNG).

* rank sweep: accuracy vs LoRA rank (log2 x-axis), one panel per model × benchmark, mean ± std over
  seeds as error bars, Full FT as a dashed horizontal line;
* ablation bars: one group of bars per metric, one bar per regulariser variant, std as error bars;
* loss curves: task loss and each regulariser term (unweighted) over optimizer steps, from the
  Trainer log history (log_history.json), mean over seeds with a ±std band.

The t-SNE 4-panel figure is drawn by tsne_visualization.py --compare (two panels per row: LoRA |
BA-LoRA for each model); scripts/tsne.sh calls it, so it is not duplicated here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# (mean, std or None) of one point; std None when fewer than two seeds finished.
Point = tuple[float, float | None]
LOSS_TERMS = (
    ("loss", "total loss"),
    ("task_loss", "task loss"),
    ("consistency_loss", "consistency (unweighted)"),
    ("diversity_loss", "diversity (unweighted)"),
    ("svd_loss", "SVD (unweighted)"),
)


def save_figure(fig, out_stem: str | Path) -> list[Path]:
    """Write `<out_stem>.pdf` and `<out_stem>.png`; returns both paths."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".pdf"), out_stem.with_suffix(".png")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _grid(n_panels: int, width: float = 4.2, height: float = 3.3):
    n_cols = min(n_panels, 2 if n_panels == 4 else 3)
    n_rows = -(-n_panels // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False)
    flat = axes.ravel()
    for ax in flat[n_panels:]:
        ax.axis("off")
    return fig, flat[:n_panels]


def rank_sweep(
    panels: Mapping[str, Mapping[str, Mapping[float, Point]]],
    full_ft: Mapping[str, Point | None],
    out_stem: str | Path,
    ylabel: str | Mapping[str, str] = "accuracy (%)",
    xlabel: str = "rank r",
    log_base: int | None = 2,
    reference_label: str = "Full FT",
) -> list[Path]:
    """Accuracy (or another metric) vs rank (or another swept setting), one panel per (model, benchmark).

    Args:
        panels: {panel title: {method label: {x: (mean, std)}}}; x values without a finished run
            are simply absent (the line skips them, the point is not invented).
        full_ft: {panel title: (mean, std) or None}: the reference drawn dashed (Full FT in the rank sweep).
        out_stem: output path without suffix.
        ylabel: one y label, or {panel title: y label} (panels not named get "accuracy (%)").
        xlabel, log_base: the x axis's label and log base (None: a linear axis, e.g. a percentage from 0).
        reference_label: the legend entry of the dashed reference.
    """
    if not panels:
        raise ValueError("rank_sweep needs at least one panel with data")
    fig, axes = _grid(len(panels))
    for ax, (title, methods) in zip(axes, panels.items(), strict=True):
        all_ranks: set[int] = set()
        for label, points in methods.items():
            ranks = sorted(points)
            if not ranks:
                continue
            all_ranks.update(ranks)
            means = [points[r][0] for r in ranks]
            stds = [points[r][1] or 0.0 for r in ranks]
            ax.errorbar(ranks, means, yerr=stds, marker="o", capsize=3, label=label)
        reference = full_ft.get(title)
        if reference is not None:
            ax.axhline(reference[0], color="black", linestyle="--", linewidth=1.2, label=reference_label)
            if reference[1]:
                ax.axhspan(
                    reference[0] - reference[1], reference[0] + reference[1], color="black", alpha=0.08
                )
        if log_base is not None:
            ax.set_xscale("log", base=log_base)
        if all_ranks:
            ax.set_xticks(sorted(all_ranks), [f"{r:g}" for r in sorted(all_ranks)])
            ax.minorticks_off()  # a log axis labels its minor ticks too (2×10¹ ...), over the swept values
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if isinstance(ylabel, str) else ylabel.get(title, "accuracy (%)"))
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:  # a benchmark whose runs have not finished yet: say so instead of an empty frame
            ax.text(
                0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", va="center", color="gray"
            )
    fig.tight_layout()
    return save_figure(fig, out_stem)


def ablation_bars(
    variants: Sequence[str],
    metrics: Mapping[str, Mapping[str, Point | None]],
    out_stem: str | Path,
    ylabel: str = "score",
) -> list[Path]:
    """One panel per metric (own y-axis: GSM8K % and GLUE avg differ in scale), one bar per variant.

    Args:
        variants: bar labels, in order.
        metrics: {metric label: {variant: (mean, std) or None}}; None is written "missing" on the axis
            instead of a bar.
    """
    if not metrics:
        raise ValueError("ablation_bars needs at least one metric")
    fig, axes = _grid(len(metrics), width=0.9 + 0.75 * max(1, len(variants)), height=3.4)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.arange(len(variants))
    for ax, (metric, values) in zip(axes, metrics.items(), strict=True):
        present = [values.get(v) for v in variants]
        means = [p[0] if p else 0.0 for p in present]
        # No error bar where there is no spread to show (one seed): a zero-length bar would read as std 0.
        errs = [p[1] if p and p[1] is not None else np.nan for p in present]
        ax.bar(
            x, means, 0.7, yerr=errs, capsize=3, color=[colors[i % len(colors)] for i in range(len(variants))]
        )
        finite = [m for m, p in zip(means, present, strict=True) if p]
        if finite:  # zoom on the differences; bars start at the axis floor, as in the paper's ablation plot
            low, high = min(finite), max(finite)
            # at least 1% of the values' size: a 0.5 floor hid NLL differences of 0.001 at a 1.09 level
            pad = max((high - low) * 0.5, 0.01 * max(abs(low), abs(high)), 1e-6)
            err = float(np.nanmax(errs)) if not np.all(np.isnan(errs)) else 0.0
            ax.set_ylim(max(0.0, low - pad - err), high + pad + err)
        for i, p in enumerate(present):
            if p is None:
                ax.annotate(
                    "missing", (x[i], ax.get_ylim()[0]), ha="center", va="bottom", rotation=90, fontsize=7
                )
        ax.set_xticks(x, list(variants), rotation=30, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_stem)


def history_series(history: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one logged key over optimizer steps (entries without the key are skipped)."""
    steps, values = [], []
    for entry in history:
        if key in entry and "step" in entry and isinstance(entry[key], (int, float)):
            steps.append(int(entry["step"]))
            values.append(float(entry[key]))
    return np.asarray(steps), np.asarray(values)


def loss_curves(
    histories: Mapping[str, Sequence[Sequence[Mapping]]],
    out_stem: str | Path,
    terms: Sequence[tuple[str, str]] = LOSS_TERMS,
) -> list[Path]:
    """One panel per loss term over steps; one line per run label, mean over its seeds ± std band.

    Args:
        histories: {run label: [log history of seed 1, seed 2, ...]}; a log history is the Trainer's
            list of dicts with "step" and the logged keys (task_loss, consistency_loss, ...).
        terms: (logged key, panel title); terms no run logged are left out.
    """
    present = [
        (k, t)
        for k, t in terms
        if any(history_series(h, k)[0].size for runs in histories.values() for h in runs)
    ]
    if not present:
        raise ValueError(f"none of {[k for k, _ in terms]} was logged in the given histories")
    fig, axes = _grid(len(present), width=4.0, height=3.0)
    for ax, (key, title) in zip(axes, present, strict=True):
        for label, runs in histories.items():
            series = [history_series(h, key) for h in runs]
            series = [(s, v) for s, v in series if s.size]
            if not series:
                continue
            # Align seeds on the steps they all logged (they share the schedule, so usually all).
            common = sorted(set.intersection(*(set(s.tolist()) for s, _ in series)))
            stacked = np.stack(
                [[dict(zip(s.tolist(), v.tolist(), strict=True))[c] for c in common] for s, v in series]
            )
            mean = stacked.mean(axis=0)
            (line,) = ax.plot(common, mean, label=f"{label} (n={len(series)})", linewidth=1.2)
            if len(series) > 1:
                std = stacked.std(axis=0, ddof=1)
                ax.fill_between(common, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_stem)
