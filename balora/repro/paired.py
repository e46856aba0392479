"""Paired per-item comparison of two runs scored on the same test items, seed by seed.

When two methods differ by less than their seed-to-seed spread (BA-LoRA vs PiSSA on the mini GSM8K
NLL), the per-item differences on the same problems are the sharper measurement: each problem is its
own control. For runs A and B and each seed, with d_i = score_A(i) − score_B(i) over the common items
i = 1..n:

    mean d ± SE (= std(d) / sqrt(n)), and how many items A scored better on.

Across seeds the per-seed means are averaged (mean ± std over seeds). The item scores are read from
results/<study>/<run>/seed<k>/eval/<bench>.samples.jsonl (the study runner, balora/repro/run.py, keeps
them for the benches in KEEP_ITEM_SCORES). Two runs scored on different item sets, or on a bench whose
protocol differs, are an error, not a comparison.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from balora.repro.results import (
    MINI_IMBALANCE_CLASS,
    MINI_IMBALANCE_RATIOS,
    MINI_LAMBDA_SCALES,
    MINI_PROBES,
    ResultsError,
)
from balora.repro.studies import imbalance_run, labelled

PROBE_METHODS = labelled(MINI_PROBES["methods"])
MINI_NOISE_LEVELS = tuple(int(percent) for percent in MINI_PROBES["noise_percents"])

MINI_NLG = "mini/nlg:smollm2"


@dataclass(frozen=True)
class PairedSpec:
    """A paired table: rows of (label, run A, run B) as "<study>:<run>", one item score per item."""

    name: str
    title: str
    bench: str  # eval/<bench>.samples.jsonl
    item_score: str  # the field of each samples row that is compared
    higher_is_better: bool
    pairs: tuple[tuple[str, str, str], ...]
    seeds: tuple[int, ...] = (42, 1024, 2024)
    decimals: int = 4


@dataclass(frozen=True)
class PairedDiff:
    """A − B over the n common items of one seed."""

    n: int
    mean: float
    se: float | None  # None for n = 1
    a_better: int


def mini_nll_paired() -> PairedSpec:
    """BA-LoRA vs PiSSA vs LoRA (and the ablation variants, and each rank) on the GSM8K answer NLL."""
    pairs = [
        ("BA-LoRA − PiSSA", f"{MINI_NLG}_ba-lora", f"{MINI_NLG}_pissa"),
        ("PiSSA − LoRA", f"{MINI_NLG}_pissa", f"{MINI_NLG}_lora"),
        ("BA-LoRA − LoRA", f"{MINI_NLG}_ba-lora", f"{MINI_NLG}_lora"),
    ]
    for variant, label in (
        ("consistency", "consistency only"),
        ("diversity", "diversity only"),
        ("svd", "SVD only"),
    ):
        pairs.append((f"{label} − PiSSA", f"mini/ablation:smollm2_{variant}", f"{MINI_NLG}_pissa"))
    for rank in (1, 4, 64):
        pairs.append(
            (
                f"BA-LoRA − PiSSA, r = {rank}",
                f"mini/rank_sweep:smollm2_ba-lora_r{rank}",
                f"mini/rank_sweep:smollm2_pissa_r{rank}",
            )
        )
    return PairedSpec(
        "mini_nll_paired",
        "Mini NLG, paired per problem: GSM8K answer NLL (nats/token), A − B "
        "(negative: A fits the reference solutions better)",
        "gsm8k_nll",
        "nll_per_token",
        higher_is_better=False,
        pairs=tuple(pairs),
    )


def mini_probes_dev_paired() -> PairedSpec:
    """The NLU bias probes, paired per SST-2 dev sentence: correct (1) or not (0) under the final model."""
    pairs = []
    for ratio in MINI_IMBALANCE_RATIOS:
        runs = {
            m: "mini/imbalance:" + imbalance_run("sst2", None, m, MINI_IMBALANCE_CLASS, ratio)
            for m, _ in PROBE_METHODS
        }
        pairs += [
            (f"1:{ratio}, BA-LoRA − PiSSA", runs["ba-lora"], runs["pissa"]),
            (f"1:{ratio}, BA-LoRA − LoRA", runs["ba-lora"], runs["lora"]),
        ]
    for level in MINI_NOISE_LEVELS:
        runs = {m: f"mini/label_noise:sst2_{m}_noise{level}" for m, _ in PROBE_METHODS}
        pairs += [
            (f"{level}% flipped, BA-LoRA − PiSSA", runs["ba-lora"], runs["pissa"]),
            (f"{level}% flipped, BA-LoRA − LoRA", runs["ba-lora"], runs["lora"]),
        ]
    return PairedSpec(
        "mini_probes_dev_paired",
        "Mini bias probes, paired per SST-2 dev sentence: accuracy "
        "difference A − B (positive: A right more often)",
        "dev",
        "correct",
        higher_is_better=True,
        pairs=tuple(pairs),
    )


def mini_probes_nll_paired() -> PairedSpec:
    """The λ-scale and LoRA + Reg probes, paired per GSM8K problem on the answer NLL."""
    pairs = [
        (
            f"BA-LoRA λ × {scale} − PiSSA",
            f"mini/lambda_scale:smollm2_ba-lora_lambda_x{scale}",
            f"{MINI_NLG}_pissa",
        )
        for scale in MINI_LAMBDA_SCALES
        if scale != "1"
    ]
    pairs.append(("LoRA + Reg − LoRA", "mini/lora_reg:smollm2_lora-reg", f"{MINI_NLG}_lora"))
    return PairedSpec(
        "mini_probes_nll_paired",
        "Mini probes, paired per problem: GSM8K answer NLL (nats/token), "
        "A − B (negative: A fits the reference solutions better)",
        "gsm8k_nll",
        "nll_per_token",
        higher_is_better=False,
        pairs=tuple(pairs),
    )


PAIRED_TABLES = {
    "mini_nll_paired": mini_nll_paired,
    "mini_probes_dev_paired": mini_probes_dev_paired,
    "mini_probes_nll_paired": mini_probes_nll_paired,
}


def _seed_dir(results_root: Path, run: str, seed: int) -> Path:
    study, _, name = run.rpartition(":")
    return results_root / study / name / f"seed{seed}"


def load_item_scores(
    results_root: str | Path, run: str, bench: str, field: str, seed: int
) -> tuple[dict[object, float], str | None] | None:
    """({task_id: score}, protocol) of one finished seed, or None when it has no item scores."""
    seed_dir = _seed_dir(Path(results_root), run, seed)
    samples = seed_dir / "eval" / f"{bench}.samples.jsonl"
    if not (seed_dir / "DONE").is_file() or not samples.is_file():
        return None
    metrics_path = seed_dir / "eval" / f"{bench}.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    protocol = (
        f"{metrics.get('protocol')} v{metrics.get('protocol_version')}" if metrics.get("protocol") else None
    )
    scores: dict[object, float] = {}
    for line_number, raw in enumerate(samples.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
            row = json.loads(line) if line.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ResultsError(f"{samples}:{line_number}: not a UTF-8 JSON line ({err})") from err
        if row is None:
            continue
        if not isinstance(row, dict) or "task_id" not in row or field not in row:
            raise ResultsError(
                f"{samples}:{line_number}: a row needs 'task_id' and {field!r}, got "
                f"{sorted(row) if isinstance(row, dict) else type(row).__name__}"
            )
        if row["task_id"] in scores:
            raise ResultsError(f"{samples}:{line_number}: task_id {row['task_id']!r} appears twice")
        scores[row["task_id"]] = float(row[field])
    if len(scores) != metrics.get("n", len(scores)):
        raise ResultsError(f"{samples} has {len(scores)} items but {metrics_path.name} says n={metrics['n']}")
    return scores, protocol


def paired_difference(
    a: dict[object, float], b: dict[object, float], higher_is_better: bool, what: str = ""
) -> PairedDiff:
    """A − B over the items both scored; the item sets must be equal (else ResultsError)."""
    if set(a) != set(b):
        only_a, only_b = sorted(map(str, set(a) - set(b)))[:5], sorted(map(str, set(b) - set(a)))[:5]
        raise ResultsError(
            f"{what}: the runs were scored on different items (only in A: {only_a}, "
            f"only in B: {only_b}); a paired comparison needs the same items"
        )
    if not a:
        raise ResultsError(f"{what}: no items to compare")
    diffs = [a[k] - b[k] for k in a]
    better = sum(d > 0 if higher_is_better else d < 0 for d in diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return PairedDiff(n=len(diffs), mean=statistics.fmean(diffs), se=se, a_better=better)


def seed_mean_ci95(means: list[float]) -> tuple[float, float] | None:
    """95% confidence interval of the mean over seeds (Student t with n − 1 degrees of freedom).

    It covers training noise (the seeds) for this test set; with 3 seeds t = 4.30, so the interval is
    ±2.48 std: effects outside it are what the seeds can rule out. None with fewer than 2 seeds.
    """
    if len(means) < 2:
        return None
    from scipy import stats

    half = stats.t.ppf(0.975, len(means) - 1) * statistics.stdev(means) / math.sqrt(len(means))
    center = statistics.fmean(means)
    return center - half, center + half


def build_paired(spec: PairedSpec, results_root: str | Path) -> dict:
    """{rows: [{label, a, b, seeds: {seed: PairedDiff | None}, mean, std, n_seeds}]} of a paired table."""
    rows = []
    for label, run_a, run_b in spec.pairs:
        per_seed: dict[int, PairedDiff | None] = {}
        for seed in spec.seeds:
            a = load_item_scores(results_root, run_a, spec.bench, spec.item_score, seed)
            b = load_item_scores(results_root, run_b, spec.bench, spec.item_score, seed)
            if a is None or b is None:
                per_seed[seed] = None
                continue
            if a[1] != b[1]:
                raise ResultsError(
                    f"{label}, seed {seed}: {run_a} was scored with protocol {a[1]}, "
                    f"{run_b} with {b[1]}; not comparable"
                )
            per_seed[seed] = paired_difference(a[0], b[0], spec.higher_is_better, f"{label}, seed {seed}")
        means = [d.mean for d in per_seed.values() if d is not None]
        rows.append(
            {
                "label": label,
                "a": run_a,
                "b": run_b,
                "seeds": per_seed,
                "n_seeds": len(means),
                "mean": statistics.fmean(means) if means else None,
                "std": statistics.stdev(means) if len(means) > 1 else None,
                "ci95": seed_mean_ci95(means),
            }
        )
    return {"spec": spec, "rows": rows}


def _signed(value: float, decimals: int) -> str:
    return f"{value:+.{decimals}f}"


def paired_markdown(table: dict) -> str:
    """The paired table as Markdown: per seed mean ± SE (A better on k/n), then mean ± std over seeds."""
    spec: PairedSpec = table["spec"]
    k = spec.decimals
    lines = [
        f"### {spec.title}",
        "",
        "| A − B | " + " | ".join(f"seed {s}" for s in spec.seeds) + " | over seeds | 95% CI over seeds |",
        "|---|" + "---:|" * (len(spec.seeds) + 2),
    ]
    for row in table["rows"]:
        cells = []
        for seed in spec.seeds:
            diff = row["seeds"][seed]
            if diff is None:
                cells.append("missing")
            else:
                se = f" ± {diff.se:.{k}f}" if diff.se is not None else ""
                cells.append(f"{_signed(diff.mean, k)}{se} (A better {diff.a_better}/{diff.n})")
        if row["mean"] is None:
            overall = "missing"
        else:
            spread = f" ± {row['std']:.{k}f}" if row["std"] is not None else ""
            overall = f"{_signed(row['mean'], k)}{spread} (n={row['n_seeds']})"
        ci = row["ci95"]
        interval = f"[{_signed(ci[0], k)}, {_signed(ci[1], k)}]" if ci is not None else "—"
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {overall} | {interval} |")
    lines += [
        "",
        f"Per seed: mean ± standard error of the per-item differences ({spec.item_score} of "
        f"eval/{spec.bench}.samples.jsonl), and on how many items A was better. Over seeds: mean ± std "
        "of the per-seed means (n = seeds with both runs); 95% CI: Student t with n − 1 degrees of freedom "
        "(with 3 seeds, ±2.48 std): differences outside it are ruled out by the seeds. "
        '"missing": a run, or its item scores, is not in results/ (yet).',
    ]
    return "\n".join(lines) + "\n"


def paired_json(table: dict) -> dict:
    spec: PairedSpec = table["spec"]
    return {
        "name": spec.name,
        "title": spec.title,
        "bench": spec.bench,
        "item_score": spec.item_score,
        "rows": [
            {
                **{k: v for k, v in row.items() if k != "seeds"},
                "seeds": {str(s): (vars(d) if d else None) for s, d in row["seeds"].items()},
            }
            for row in table["rows"]
        ],
    }
