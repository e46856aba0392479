"""Result folders → the paper's tables on pandas: one long frame per study, mean ± std over seeds, Markdown, LaTeX.

A run writes results/<study>/<run-name>/seed<k>/ (results/README.md): config.yaml, run.json (provenance),
metrics.json, eval/<bench>.json, log_history.json (optional) and DONE. Each study folder is read once into a
long frame, one row per (run, seed, metric: a key of metrics.json or "<bench>.<key>" of an eval file) with its
evaluation protocol. A cell (run name, metric) is the mean ± sample std of its seeds, ranked within the row's
group, set beside the paper's numbers; rows and columns come from the study registry.

Bad input is an error, never an average: seeds of one run whose configs differ (apart from the seed and
paths), a metric that is NaN or not a number, one column under different protocol versions. Missing seeds
are not dropped silently: each cell carries n, and short cells are flagged under the table.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from balora.recipes import adapter_of
from balora.repro import studies
from balora.repro.studies import LABELS, MINI_AXES, imbalance_run

DONE_MARKER, MISSING = "DONE", "missing"
SEED_DIR_RE = re.compile(r"^seed(\d+)$")
# Config keys that may differ between the seeds of one run: paths, logging, and how the LM head is applied
# (all positions or the supervised rows: the same loss to float rounding; older runs recorded false or none).
SEED_SPECIFIC_KEYS = frozenset(
    "seed data_seed output_dir logging_dir run_name init_dir resume_from_checkpoint hub_model_id report_to "
    "logging_strategy logging_steps logging_first_step disable_tqdm rows_only_lm_head".split()
)
# A key one config has and the other lacks is the same setting when its value is one of these: a field
# added to the arguments after the older seeds ran, at its no-op default (e.g. label_noise: 0.0).
_NO_OP_DEFAULTS = (None, False, 0, 0.0, "", [], {})
# Keys naming the evaluation protocol, which a column must not mix; an evaluation's number of scored tasks,
# data file and token cap are part of it (a 100-row subset at 256 new tokens is not the test-set number).
PROTOCOL_KEYS = ("protocol", "protocol_version")
EVAL_PROTOCOL_KEYS = ("n", "settings.data.file_sha256", "settings.decoding.max_new_tokens")
# Evaluation protocol versions whose headline score is not the paper's reading (eval/README.md).
LENIENT_PROTOCOLS = frozenset({("balora-gsm8k", "1"), ("balora-math", "1")})


class ResultsError(ValueError):
    """Result folders that cannot be aggregated as asked (inconsistent configs, mixed protocols)."""


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        flat |= flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def read_json(path: Path, kind: type = dict) -> Any:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path} is not valid JSON ({err}); re-run that run or delete it") from err
    if not isinstance(payload, kind):
        raise ResultsError(f"{path} must hold a JSON {kind.__name__}, found {type(payload).__name__}")
    return payload


@dataclass
class SeedResult:
    """One finished run of one seed."""

    seed: int
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]  # flattened: metrics.json keys + "<bench>.<key>" of eval/<bench>.json


def load_seed_dir(path: str | Path) -> SeedResult:
    """Read one results/<study>/<run>/seed<k>/ folder (it must hold the DONE marker)."""
    path = Path(path)
    if not (match := SEED_DIR_RE.match(path.name)):
        raise ResultsError(f"{path}: a seed folder must be named seed<k> (e.g. seed42)")
    if not (path / DONE_MARKER).exists():
        raise ResultsError(f"{path} has no {DONE_MARKER} marker: the run did not finish; re-run its script")
    if lacks := [name for name in ("config.yaml", "run.json", "metrics.json") if not (path / name).is_file()]:
        raise ResultsError(f"{path} is marked DONE but lacks {lacks[0]}; delete the folder and re-run")
    if not isinstance(config := yaml.safe_load((path / "config.yaml").read_text()) or {}, dict):
        raise ResultsError(f"{path / 'config.yaml'} must be a mapping")
    metrics = flatten(read_json(path / "metrics.json"))
    for eval_file in sorted((path / "eval").glob("*.json")):
        metrics |= flatten(read_json(eval_file), prefix=f"{eval_file.stem}.")
    if config.get("seed") is not None and int(config["seed"]) != (seed := int(match.group(1))):
        raise ResultsError(f"{path}: folder says seed {seed} but config.yaml says seed {config['seed']}")
    read_json(path / "run.json")  # the provenance: unread here, but it must be readable
    return SeedResult(int(match.group(1)), path, config, metrics)


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the keys that differ between seeds of one run, `method` as the adapter it builds:
    `ba-lora` and `pissa` with the same λs train the same model (older ablation runs record pissa)."""
    flat = {k: v for k, v in flatten(config).items() if k not in SEED_SPECIFIC_KEYS}
    return flat | {"method": adapter_of(flat["method"])} if "method" in flat else flat


def _differs(key: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
    if key in a and key in b:
        return a[key] != b[key]
    value = a.get(key, b.get(key))
    return not any(value == default and type(value) is type(default) for default in _NO_OP_DEFAULTS)


def check_same_config(run_name: str, seeds: Sequence[SeedResult]) -> None:
    """Raise ResultsError when the seeds of one run were trained with different configs."""
    reference = comparable_config(seeds[0].config) if seeds else {}
    for other in seeds[1:]:
        candidate = comparable_config(other.config)
        if differing := sorted(k for k in reference | candidate if _differs(k, reference, candidate)):
            details = ", ".join(f"{k}: {reference.get(k)!r} vs {candidate.get(k)!r}" for k in differing[:5])
            raise ResultsError(
                f"run {run_name!r}: seed{seeds[0].seed} and seed{other.seed} have different configs ({details}"
                f"{', ...' if len(differing) > 5 else ''}). Runs with different configs must have different "
                "run names; move or delete the stale seed folder."
            )


def load_run(run_dir: str | Path) -> tuple[dict[int, SeedResult], list[Path]]:
    """The finished seed<k>/ of a run folder by seed, checked to share one config, and the unfinished ones."""
    children = sorted(c for c in Path(run_dir).iterdir() if c.is_dir() and SEED_DIR_RE.match(c.name))
    done = [load_seed_dir(c) for c in children if (c / DONE_MARKER).exists()]
    check_same_config(Path(run_dir).name, done)
    return {r.seed: r for r in done}, [c for c in children if not (c / DONE_MARKER).exists()]


def _protocol_of(metrics: dict[str, Any], space: str) -> str | None:
    """The protocol recorded beside the metrics of namespace `space` ("gsm8k." for "gsm8k.score"), as JSON,
    with the fields of a nested protocol dict (flattened to "<space>protocol.<field>")."""
    keys = (*PROTOCOL_KEYS, *EVAL_PROTOCOL_KEYS) if space else PROTOCOL_KEYS
    found = {key: metrics[f"{space}{key}"] for key in keys if f"{space}{key}" in metrics}
    found |= {k[len(space) :]: v for k, v in metrics.items() if k.startswith(f"{space}protocol.")}
    return json.dumps(found, sort_keys=True, default=str) if found else None


def load_study(study_dir: str | Path, study: str | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Read results/<study>/ once: the long frame (study, run, seed, metric, value, protocol, path) of its
    finished seeds (no folder: empty), and its unfinished seed folders. `study`: by default the folder."""
    records, unfinished = [], []
    space = lambda metric: metric.rsplit(".", 1)[0] + "." if "." in metric else ""  # noqa: E731
    for child in sorted(Path(study_dir).iterdir()) if Path(study_dir).is_dir() else []:
        if child.is_dir() and any(SEED_DIR_RE.match(c.name) for c in child.iterdir() if c.is_dir()):
            finished, not_done = load_run(child)
            unfinished += not_done
            for seed, r in finished.items():
                found = {s: _protocol_of(r.metrics, s) for s in set(map(space, r.metrics))}
                records += [(child.name, seed, m, v, found[space(m)], r.path) for m, v in r.metrics.items()]
    columns = ["run", "seed", "metric", "value", "protocol", "path"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.assign(study=study or Path(study_dir).name)[["study", *columns]], unfinished


class StudyCache:
    """Loads each results/<study>/ once; resolves "<study>:<run>" and plain run names to their rows."""

    def __init__(self, results_root: str | Path, default_study: str):
        self.root, self.default = Path(results_root), default_study
        self.studies: dict[str, tuple[pd.DataFrame, list[Path]]] = {}

    def run(self, name: str) -> pd.DataFrame | None:
        """The long-frame rows of one run (None: no finished seed)."""
        study, _, run = name.rpartition(":")
        if (study := study or self.default) not in self.studies:
            self.studies[study] = load_study(self.root / study, study)
        rows = self.studies[study][0].query("run == @run")
        return rows if len(rows) else None


def metric_values(run: pd.DataFrame | None, metric: str, seeds: Sequence[int], scale: float) -> pd.DataFrame:
    """`metric`'s rows at `seeds` (all if empty) of a run (None: none), checked: finite, one protocol."""
    empty = pd.DataFrame(columns=["seed", "value", "protocol"])
    rows = empty if run is None else run[run["metric"] == metric]
    rows = rows[rows["seed"].isin(seeds)] if seeds else rows
    for value, path in zip(rows["value"], rows.get("path", []), strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ResultsError(f"{path}: metric {metric!r} is {value!r}, not a number")
        if not math.isfinite(value):  # a mean with a NaN in it is NaN: name the file, not a table of NaNs
            bench_file = path / "eval" / f"{metric.split('.')[0]}.json"
            source = bench_file if "." in metric and bench_file.is_file() else path / "metrics.json"
            raise ResultsError(
                f"{source}: metric {metric!r} is {value} (the run diverged or its evaluation failed); "
                "re-run that seed or delete its folder"
            )
    if rows["protocol"].nunique(dropna=False) > 1:
        raise ResultsError(
            f"run {rows['run'].iloc[0]!r}, metric {metric!r}: seeds were evaluated under different protocols "
            f"{sorted(map(str, set(rows['protocol'])))}; re-evaluate them under one protocol version"
        )
    return rows.sort_values("seed").assign(value=rows["value"].astype(float) * scale)


@dataclass(frozen=True)
class Cell:
    """mean ± sample std (n-1; None under two seeds) of one metric over the finished seeds of one cell."""

    values: dict[int, float]  # seed -> value
    mean: float | None = None
    std: float | None = None
    missing_seeds: tuple[int, ...] = ()
    protocol: str | tuple[str, ...] | None = None  # an averaged cell: those of its runs
    n: int = 0  # the number of finished seeds: len(values)

    @classmethod
    def of(cls, per_seed: pd.Series, seeds: Sequence[int], protocol: str | tuple[str, ...] | None) -> Cell:
        """The cell of values indexed by seed (fmean / stdev are fsum-based: no dependence on seed order)."""
        values = {int(seed): float(value) for seed, value in per_seed.sort_index().items()}
        mean = statistics.fmean(values.values()) if values else None
        std = statistics.stdev(values.values()) if len(values) > 1 else None
        return cls(values, mean, std, tuple(s for s in seeds if s not in values), protocol, len(values))


@dataclass(frozen=True)
class RowSpec:
    """A table row: `label` as printed, `key` substituted for {row} in column run templates."""

    label: str
    key: str
    group: str | None = None  # e.g. the base model in the NLG table; best/second are ranked per group


@dataclass(frozen=True)
class ColumnSpec:
    """A table column: `metric` of run `run.format(row=..., col=key[, task=...])` ("<study>:<run>": another
    study's). With `average_over`, a cell is per seed the mean of its tasks' runs, if every task has it."""

    label: str
    key: str
    metric: str
    run: str = "{row}"
    scale: float = 1.0  # e.g. 100 to print fractions as percentages
    higher_is_better: bool = True
    average_over: tuple[str, ...] = ()
    decimals: int | None = None  # None: the table's


@dataclass(frozen=True)
class TableSpec:
    """What a table shows: rows, columns, seeds, the #Params and Avg columns, the paper's table."""

    name: str
    title: str
    study: str  # results/<study>/
    rows: tuple[RowSpec, ...]
    columns: tuple[ColumnSpec, ...]
    seeds: tuple[int, ...] = (42, 1024, 2024)
    params_metric: str | None = "trainable_params"
    average: bool = True
    paper_file: str | None = None  # results/paper/<file>: the paper version whose recipe these runs follow
    # The runs' regulariser preset and its text: a paper file of another preset gets "Δ compares recipes".
    preset: str | None = None
    recipe: str | None = None
    decimals: int = 2
    overrides: tuple[tuple[str, str, str], ...] = ()  # (row key, column key, run) replacing the template

    def run_names(self, row: RowSpec, col: ColumnSpec) -> list[str]:
        """The run(s) feeding one cell, as "<study>:<run>" or "<run>" (this table's study)."""
        template = {(r, c): run for r, c, run in self.overrides}.get((row.key, col.key), col.run)
        return [template.format(row=row.key, col=col.key, task=task) for task in col.average_over or [None]]


@dataclass
class TableResult:
    """Aggregated table: cells[row.key][col.key], #Params per row, Avg per row (mean of the column means)."""

    spec: TableSpec
    cells: dict[str, dict[str, Cell]]
    params: dict[str, float | None]
    averages: dict[str, float | None]
    unfinished: list[Path]

    def means(self) -> pd.DataFrame:
        """Row key × column key (+ "avg" when the table has it) of the means; NaN where missing."""
        means = {r: {c: cell.mean for c, cell in cs.items()} for r, cs in self.cells.items()}
        average = {"avg": pd.Series(self.averages, dtype=float)} if self.spec.average else {}
        return pd.DataFrame.from_dict(means, orient="index").assign(**average).astype(float)


def build_table(spec: TableSpec, results_root: str | Path) -> TableResult:
    """Aggregate results/<spec.study>/ into `spec`'s cells (mean ± std over spec.seeds).

    Raises:
        ResultsError: inconsistent configs within a run, a NaN or non-number, mixed protocols in a column.
    """
    cache = StudyCache(results_root, spec.study)
    sources = {(r.key, c.key): (c, spec.run_names(r, c)) for r in spec.rows for c in spec.columns}
    long = pd.concat(
        metric_values(cache.run(run), col.metric, spec.seeds, col.scale).assign(row=key[0], col=key[1])
        for key, (col, runs) in sources.items()
        for run in runs
    )
    # A cell averaged over runs (average_over) counts a seed only when every one of its runs has it.
    per_seed = long.groupby(["row", "col", "seed"])["value"].agg(["size", statistics.fmean])
    per_seed = per_seed[per_seed["size"].to_numpy() == [len(sources[k[:2]][1]) for k in per_seed.index]]
    recorded = {k: sorted(set(g.dropna())) for k, g in long.groupby(["row", "col"])["protocol"]}
    cells: dict[str, dict[str, Cell]] = {r.key: {} for r in spec.rows}
    for (row, key), (_, runs) in sources.items():
        protocols = recorded.get((row, key))  # runs that record no protocol add nothing
        protocol = (protocols[0] if len(runs) == 1 else tuple(protocols)) if protocols else None
        values = per_seed.loc[(row, key), "fmean"] if (row, key) in per_seed.index else pd.Series(dtype=float)
        cells[row][key] = Cell.of(values, spec.seeds, protocol)
    for col in spec.columns:
        if len(found := {row[col.key].protocol for row in cells.values() if row[col.key].n}) > 1:
            raise ResultsError(
                f"table {spec.name!r}, column {col.label!r}: runs were evaluated under different protocols "
                f"{sorted(map(str, found))}; re-evaluate them under one protocol version"
            )
    # Avg = plain mean of the column means (the paper's Avg); undefined when a column is missing.
    means = {r: [cell.mean for cell in row.values()] for r, row in cells.items()}
    averages = {r: statistics.fmean(m) if None not in m else None for r, m in means.items()}
    params = {r.key: _row_params(spec, r, cache) for r in spec.rows}
    return TableResult(
        spec, cells, params, averages, [p for _, paths in cache.studies.values() for p in paths]
    )


def _row_params(spec: TableSpec, row: RowSpec, cache: StudyCache) -> float | None:
    """#Params of a row: the trainable-parameter count reported by its first run that has one."""
    runs = [
        run
        for col in spec.columns
        for name in spec.run_names(row, col)
        if (run := cache.run(name)) is not None
    ]
    counts = (v for run in runs for v in run.loc[run["metric"] == spec.params_metric, "value"])
    return next((float(v) for v in counts if isinstance(v, (int, float)) and not isinstance(v, bool)), None)


def load_paper_table(path: str | Path) -> dict[str, Any]:
    """Read results/paper/<table>.json: {"source", "columns", "rows": [{"group", "method", "values"}]}."""
    payload = json.loads(Path(path).read_text())
    if lacks := [key for key in ("source", "columns", "rows") if key not in payload]:
        raise ResultsError(f"{path}: paper table lacks {lacks[0]!r}")
    return payload


def paper_lookup(paper: dict[str, Any], spec: TableSpec) -> dict[tuple[str | None, str], dict[str, Any]]:
    """Map (group, row label) of our rows -> the paper row with the same group and method."""
    by_key = {(r.get("group"), r["method"]): r for r in paper["rows"]}
    return {(r.group, r.label): by_key[(r.group, r.label)] for r in spec.rows if (r.group, r.label) in by_key}


_LATEX_WORDS = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_SPECIAL = str.maketrans(_LATEX_WORDS | {c: "\\" + c for c in "&%$#_{}"})


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in a label (one pass, so the backslash is not escaped twice)."""
    return str(text).translate(LATEX_SPECIAL)


def format_count(value: float | None) -> str:
    """Human-readable parameter count: 320000000 -> "320M", 1330000 -> "1.33M"."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value is not None and abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return "—" if value is None else f"{value:.0f}"


def rank_frame(result: TableResult) -> pd.DataFrame:
    """Dense rank of each mean within its row group (1 = best; ties share a rank; NaN: no value)."""
    signs = [1 if c.higher_is_better else -1 for c in result.spec.columns] + [1] * result.spec.average
    groups = [r.group or "" for r in result.spec.rows]
    return (result.means() * signs).round(10).groupby(groups).rank("dense", ascending=False)


def _fmt(value: float | None, decimals: int, signed: bool = False) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:{'+' * signed}.{decimals}f}"


def _cell_text(cell: Cell, decimals: int) -> str:
    std = f" ± {cell.std:.{decimals}f}" if cell.std is not None else ""
    short = f" (n={cell.n})" if cell.missing_seeds else ""
    return f"{cell.mean:.{decimals}f}{std}{short}" if cell.n else MISSING


def _frame(result: TableResult, paper: dict | None, esc: Callable, marks: dict) -> tuple[list, pd.DataFrame]:
    """Header and cell texts (a group's name above its first row, in `marks[-1]`), the best of each column
    within a group in `marks[1]`, the second in `marks[2]`: both renderers start here."""
    spec, ranks, means = result.spec, rank_frame(result).fillna(0).astype(int), result.means()
    lookup = paper_lookup(paper, spec) if paper else {}
    published = [lookup.get((r.group, r.label), {}).get("values", {}) for r in spec.rows]
    published = pd.DataFrame(published, columns=[c.label for c in spec.columns] + ["Avg"], dtype=float)
    header, columns = ["Method"], [[esc(r.label) for r in spec.rows]]
    if spec.params_metric:
        header.append(esc("#Params"))
        columns.append([format_count(result.params[r.key]) for r in spec.rows])
    shown = [(c.label, c.key, spec.decimals if c.decimals is None else c.decimals) for c in spec.columns]
    for label, key, decimals in shown + [("Avg", "avg", spec.decimals)] * spec.average:
        if key == "avg":
            texts = [MISSING if pd.isna(m) else _fmt(m, decimals) for m in means["avg"]]
        else:
            texts = [_cell_text(result.cells[r.key][key], decimals) for r in spec.rows]
        header.append(esc(label))
        columns.append([marks.get(k, "{}").format(text) for text, k in zip(texts, ranks[key], strict=True)])
        if paper:
            header += [f"{esc(label)} (paper)", "Δ"]
            columns.append([_fmt(v, decimals) for v in published[label]])
            columns.append([_fmt(v, decimals, True) for v in means[key].to_numpy() - published[label]])
    body = []
    for i, (row, texts) in enumerate(zip(spec.rows, zip(*columns, strict=True), strict=True)):
        if row.group is not None and (i == 0 or spec.rows[i - 1].group != row.group):
            body.append([marks[-1].format(esc(row.group))] + [""] * (len(header) - 1))
        body.append(list(texts))
    return header, pd.DataFrame(body)


def to_markdown(result: TableResult, paper: dict[str, Any] | None = None) -> str:
    """Render a table as GitHub Markdown (bold best, <u>underlined</u> second, missing cells named)."""
    header, text = _frame(result, paper, str, {-1: "*{}*", 1: "**{}**", 2: "<u>{}</u>"})
    align = ["left"] + ["right"] * (len(header) - 1)
    table = text.to_markdown(index=False, headers=header, colalign=align, disable_numparse=True)
    notes = "".join(f"- {note}\n" for note in _footnotes(result, paper))
    return f"**{result.spec.title}**\n\n{table}\n\n{notes}"


def to_latex(result: TableResult, paper: dict[str, Any] | None = None) -> str:
    """Render a table as a LaTeX booktabs tabular (\\textbf best, \\underline second) through Styler."""
    marks = {-1: r"\textit{{{}}}", 1: r"\textbf{{{}}}", 2: r"\underline{{{}}}"}
    header, text = _frame(result, paper, latex_escape, marks)
    # "—" (no value) as a plain-ASCII LaTeX dash, so the table compiles without a Unicode setup.
    text = text.map(lambda s: s.replace("±", r"$\pm$").replace("—", "--"))
    styler = text.style.hide(axis="index").format_index(lambda i: header[i].replace("Δ", r"$\Delta$"), axis=1)
    tabular = styler.to_latex(column_format="l" + "r" * (len(header) - 1), hrules=True)
    notes = "".join(f"% {latex_escape(note)}\n" for note in _footnotes(result, paper))
    return f"% {latex_escape(result.spec.title)}\n{tabular}{notes}"


def _name_cells(spec: TableSpec, cells: list[tuple[RowSpec, ColumnSpec]]) -> str:
    """'every cell', whole rows ('LoRA (all columns)') or single cells ('LoRA / SST-2'), in table order."""
    if len(cells) == len(spec.rows) * len(spec.columns):
        return "every cell"
    label = lambda row: f"{row.group + ' / ' if row.group else ''}{row.label}"  # noqa: E731
    full = {r.key for r in spec.rows if sum(row.key == r.key for row, _ in cells) == len(spec.columns)}
    names = [label(r) + " (all columns)" * (len(spec.columns) > 1) for r in spec.rows if r.key in full]
    return ", ".join(names + [f"{label(row)} / {col.label}" for row, col in cells if row.key not in full])


def _protocol_text(protocol: str | tuple[str, ...] | None) -> str | None:
    """'balora-gsm8k v2, n=1319, max_new_tokens 1024' from a recorded protocol (an averaged cell: its runs')."""
    if protocol is None or isinstance(protocol, tuple):
        return "; ".join(sorted({t for t in map(_protocol_text, protocol or ()) if t})) or None
    found = json.loads(protocol)
    name = " ".join(f"{'v' * (k != 'protocol')}{found[k]}" for k in PROTOCOL_KEYS if found.get(k) is not None)
    if (found.get("protocol"), str(found.get("protocol_version"))) in LENIENT_PROTOCOLS:
        name += " (a lenient extraction, not the paper's protocol)"
    extra = [f"n={found['n']}"] if found.get("n") is not None else []
    if (tokens := found.get("settings.decoding.max_new_tokens")) is not None:
        extra.append(f"max_new_tokens {tokens}")
    return ", ".join([name] * bool(name) + extra) or None


def _footnotes(result: TableResult, paper: dict[str, Any] | None) -> list[str]:
    spec, seeds = result.spec, ", ".join(map(str, result.spec.seeds))
    cells = [(r, c, result.cells[r.key][c.key]) for r in spec.rows for c in spec.columns]
    legend = "best per group in bold, second underlined; Avg = mean of the column means."
    notes = [f"mean ± sample std over seeds {seeds}; {legend}"]
    # Cells with the same shortfall are named together: a whole table at n = 1 is one line, not one per cell.
    short: dict[str, list[tuple[RowSpec, ColumnSpec]]] = {}
    for row, col, cell in cells:
        if cell.missing_seeds or not cell.n:
            missing = f"missing (run {', '.join(spec.run_names(row, col))})"
            why = f"n={cell.n}, missing seeds {list(cell.missing_seeds)}" if cell.n else missing
            short.setdefault(why, []).append((row, col))
    if short:
        flagged = "; ".join(f"{_name_cells(spec, named)}: {why}" for why, named in short.items())
        notes.append(f"Incomplete cells: {flagged}.")
    if result.unfinished:
        unfinished = ", ".join(map(str, result.unfinished))
        notes.append(f"Unfinished seed folders (no DONE marker, not counted): {unfinished}.")
    parts = []
    for col in spec.columns:
        texts = sorted({t for _, c, cell in cells if c == col and (t := _protocol_text(cell.protocol))})
        parts += [f"{col.label}: {' / '.join(texts)}"] * bool(texts)
    notes += ["Evaluation protocol: " + "; ".join(parts) + " (eval/README.md)."] * bool(parts)
    notes += [f"Our runs: {spec.recipe}."] * bool(spec.recipe)
    if not paper and spec.paper_file:
        return notes + [f"Paper comparison: results/paper/{spec.paper_file} (add --paper to print it)."]
    if not paper:
        why = "the paper's numbers of this experiment were not recovered"
        why = "no published counterpart at this scale" if spec.study.startswith("mini/") else why
        return notes + [f"Not compared with a paper table ({why})."]
    status = f" ({paper['status']})" if paper.get("status") else ""
    version, recipe = paper.get("version", "version not recorded"), paper.get("recipe", "not recorded")
    notes.append(f"Paper numbers: {version}; recipe: {recipe}. Source: {paper['source']}{status}")
    if spec.preset and paper.get("preset") and paper["preset"] != spec.preset:
        notes.append(
            f"The paper's numbers were made with another recipe ({paper['preset']}) than our runs "
            f"({spec.preset}): Δ compares different objectives, not a reproduction."
        )
    return notes


def to_json(result: TableResult) -> dict[str, Any]:
    """Machine-readable table: per cell values by seed, n, mean, std (for plots and checks)."""
    spec = result.spec

    def cell(row: RowSpec, col: ColumnSpec) -> dict[str, Any]:
        c = result.cells[row.key][col.key]
        stats = {"values": {str(k): v for k, v in c.values.items()}, "n": c.n, "mean": c.mean, "std": c.std}
        return stats | {"missing_seeds": list(c.missing_seeds), "runs": spec.run_names(row, col)}

    rows = [
        {"label": r.label, "key": r.key, "group": r.group, "params": result.params[r.key]}
        | {"avg": result.averages[r.key], "cells": {c.key: cell(r, c) for c in spec.columns}}
        for r in spec.rows
    ]
    columns = [{"label": c.label, "key": c.key, "metric": c.metric} for c in spec.columns]
    return dict(table=spec.name, title=spec.title, seeds=list(spec.seeds), columns=columns, rows=rows)


# --- the tables of the paper and of the CPU mini-reproduction -------------------------------------
# Rows and columns are read from the grids of the study registry (balora/repro/studies.py), whose run names
# the templates spell out (results/README.md): a grid changed there is its table changed here.

ICLR_NLG_RECIPE = (
    "regulariser preset iclr2026 (NLG): λ = 0.025 / 0.005 / 0.005, KL at T = 2, top-20 entropy, "
    "Frobenius SVD share k = 10"
)
ICLR_NLU_RECIPE = (
    "regulariser preset iclr2026 (NLU): λ = 0.15 / 0.03 / 0.03, covariance diversity, nuclear SVD k = 5"
)
GRID = {name: study.axes for name, study in studies.STUDIES.items()}
MINI_PROBES, MINI_NLG_MODEL = GRID["mini_probes"], "smollm2"
MINI_IMBALANCE_CLASS = MINI_PROBES["minority_class"][0]
MINI_IMBALANCE_RATIOS = tuple(int(ratio) for ratio in MINI_PROBES["imbalance_ratios"])
MINI_LAMBDA_SCALES = tuple(sorted(("1", *MINI_PROBES["lambda_scales"]), key=float))  # 1: the main BA-LoRA run
TABLES: dict[str, Callable[[], TableSpec]] = {}  # name -> a call that builds its TableSpec


def _table(name: str, title: str, rows, cols, recipe: str, paper: str | None = None, **options) -> None:
    """Registers table `name` of runs trained with the iclr2026 regulariser presets, with no Avg unless asked,
    read from results/<study>/ (default: the name, mini_<x> as mini/<x>)."""
    options = {"study": name.replace("mini_", "mini/", 1), "average": False} | options
    options |= {"paper_file": paper, "preset": "iclr2026", "recipe": recipe}
    TABLES[name] = partial(TableSpec, name, title, rows=tuple(rows), columns=tuple(cols), **options)


def _rows(keys: Sequence[str], groups: Sequence = (None,), prefix: bool = True) -> list[RowSpec]:
    """A row per (group, key), labelled from LABELS, its key <group>_<key> (<key> without a group or prefix)."""
    return [
        RowSpec(LABELS[k], f"{g}_{k}" if g and prefix else k, LABELS.get(g)) for g in groups for k in keys
    ]


def _columns(keys: Sequence[str], metric: str, run: str, label: str = "{}", **options) -> list[ColumnSpec]:
    """A column per key, labelled `label` of its LABELS entry (else of the key), {key} of `metric` and `run`
    filled in ({row} stays for the rows)."""
    fill = lambda text, key: text.replace("{key}", key)  # noqa: E731
    return [
        ColumnSpec(label.format(LABELS.get(k, k)), k, fill(metric, k), fill(run, k), **options) for k in keys
    ]


def _bench_columns(benches: dict[str, tuple[str, ...]], subsets: Sequence[str]) -> list[ColumnSpec]:
    """A column per benchmark of each training subset, read from run {row}_<subset>."""
    return [c for s in subsets for c in _columns(benches[s], "{key}.score", f"{{row}}_{s}")]


def _nll_column(run: str) -> list[ColumnSpec]:
    """The GSM8K solution NLL of the mini NLG runs: the low-noise companion of a 64-question accuracy."""
    return [ColumnSpec("GSM8K NLL", "gsm8k_nll", "gsm8k_nll.score", run, higher_is_better=False, decimals=3)]


def _imbalance_columns(run: str, minority: str, prefix: str = "", keys: str = "{}") -> list[ColumnSpec]:
    """Minority recall, balanced accuracy, macro-F1 (and for the mini probe the threshold-free AUROC: it tells
    "ranks the minority first but never predicts it" from "has not learnt it") of the final model (%)."""
    metrics = [
        ("minority recall", "recall", f"recall_{minority}"),
        ("balanced acc", "bacc", "balanced_accuracy"),
    ]
    metrics += [("macro-F1", "f1", "macro_f1")] + [("AUROC", "auroc", "auroc")] * bool(prefix)
    return [ColumnSpec(prefix + text, keys.format(k, text), f"final.{m}", run, 100) for text, k, m in metrics]


def _paper_tables() -> None:
    """The paper's tables, its appendix experiments and the model range."""
    # NLG: models × methods × the benchmarks of each training set (%; MT-Bench: first-turn rating 1-10),
    # compared with the ICLR-2026 (v6) table; the v3-v5 table is results/paper/nlg_table.json (--paper_file).
    grid, title = GRID["nlg_table"], "NLG: GSM8K, MATH, HumanEval, MBPP (%), MT-Bench (1-10)"
    cols, rows = (
        _bench_columns(studies.SUBSET_BENCHES, grid["subsets"]),
        _rows(grid["methods"], grid["models"]),
    )
    _table("nlg", title, rows, cols, ICLR_NLG_RECIPE, "nlg_table_iclr2026.json", average=True)
    # NLU: DeBERTa-v3-base, 10 methods × 8 GLUE tasks (scripts/glue.sh).
    grid, title = GRID["nlu_table"], "NLU: GLUE dev (DeBERTa-v3-base)"
    cols = _columns(grid["tasks"], "score", f"{{key}}_{grid['models'][0]}_{{row}}")
    rows = _rows(grid["methods"])
    _table("nlu", title, rows, cols, ICLR_NLU_RECIPE, "nlu_table_iclr2026.json", average=True)
    # The regulariser ablation (the published v4/v5 figure used the v1-v5 recipe; our variants switch off λ of
    # the ICLR-2026 configs): LLMs on GSM8K and MATH, then DeBERTa-v3-base's GLUE avg over the eight tasks.
    grid, glue, title = GRID["ablation_llms"], GRID["ablation"], "Ablation of the regularisers: "
    cols = _columns(studies.SUBSET_BENCHES["metamath"], "{key}.score", "{row}")
    rows = _rows(grid["variants"], grid["models"])
    _table("ablation", f"{title}GSM8K, MATH (%)", rows, cols, ICLR_NLG_RECIPE, "ablation.json")
    cols = [ColumnSpec("GLUE avg", "glue", "score", "glue_{task}_{row}", average_over=glue["glue_tasks"])]
    rows, title = _rows(glue["variants"], glue["nlu_model"], prefix=False), f"{title}DeBERTa-v3-base GLUE avg"
    _table("ablation_glue", title, rows, cols, ICLR_NLU_RECIPE, "ablation_glue.json", study="ablation")
    # v7 appendix: imbalanced MNLI, recall of the minority class (final model).
    grid = GRID["imbalanced_mnli"]
    c, ratio, model = grid["minority_class"][0], grid["ratio"][0], grid["model"][0]
    cols = _imbalance_columns(imbalance_run("mnli", model, "{row}", c, ratio), c, keys="{1}")
    title = f"Imbalanced MNLI ({LABELS[model]}): {c} kept at 1:{ratio}, matched dev (%)"
    _table("imbalanced_mnli", title, _rows(grid["methods"]), cols, ICLR_NLU_RECIPE, "imbalanced_mnli.json")
    # v7 appendix: the NLU diversity term on MNLI, covariance (the preset; the NLU table's run) vs entropy.
    run = "_".join(GRID["nlu_diversity"][axis][0] for axis in ("task", "model"))
    cols = [ColumnSpec("MNLI", "MNLI", "score", f"{run}_ba-lora-entropy")]
    overrides = (("covariance", "MNLI", f"nlu:{run}_ba-lora"), ("lora", "MNLI", f"nlu:{run}_lora"))
    title = "NLU diversity term on MNLI (DeBERTa-v3-base), matched dev accuracy (%)"
    recipe = f"{ICLR_NLU_RECIPE}; the entropy row: --diversity_type entropy"
    rows = _rows(("covariance", "entropy", "lora"))
    _table("nlu_diversity", title, rows, cols, recipe, "nlu_diversity.json", overrides=overrides)
    # v6 §3.2.2: PiSSA vs BA-LoRA on RoBERTa-base (curated pre-training text) and T5-base (C4).
    grid, title = GRID["noisy_probe"], "Noisy-pretraining probe: GLUE dev (%)"
    cols = [ColumnSpec(LABELS[task], LABELS[task], "score", f"{task}_{{row}}") for task in grid["tasks"]]
    recipe = f"each task's DeBERTa-v3-base recipe on the probe model; {ICLR_NLU_RECIPE}"
    rows = _rows(grid["methods"], grid["models"])
    _table("noisy_probe", title, rows, cols, recipe, "noisy_pretraining.json", average=True)
    # BA-LoRA across models (scripts/model_range.sh): GSM8K after MetaMathQA, HumanEval after CodeFeedback.
    grid, title = GRID["model_range"], "BA-LoRA across models: GSM8K and HumanEval (%)"
    cols = _bench_columns(studies.MODEL_RANGE_BENCHES, grid["subsets"])
    rows = _rows(grid["methods"], grid["models"])
    _table("model_range", title, rows, cols, f"the NLG table's recipe, rank 64 outside it; {ICLR_NLG_RECIPE}")


def _mini_tables() -> None:
    """The CPU mini-reproduction (SmolLM2-135M-Instruct on GSM8K, all-MiniLM-L6-v2 on GLUE) and its probes."""
    nlg, sst2 = f"mini/nlg:{MINI_NLG_MODEL}", f"the mini SST-2 configs; {ICLR_NLU_RECIPE}"
    # SmolLM2 trained on GSM8K train rows, scored on a GSM8K test subset; Full FT: a row, trained on request.
    loss = ColumnSpec("train loss", "train_loss", "train_loss", higher_is_better=False)
    cols = [ColumnSpec("GSM8K", "gsm8k", "gsm8k.score"), *_nll_column("{row}"), loss]
    title = "Mini NLG: SmolLM2-135M-Instruct, GSM8K test subset accuracy (%) and solution NLL (nats/token)"
    recipe = f"SmolLM2-135M-Instruct on 160 GSM8K train rows; {ICLR_NLG_RECIPE}"
    _table("mini_nlg", title, _rows(("full", *MINI_AXES["nlg_methods"]), (MINI_NLG_MODEL,)), cols, recipe)
    # MiniLM on the local GLUE tasks (dev sets).
    cols, rows = _columns(MINI_AXES["nlu_tasks"], "score", "{key}_{row}"), _rows(MINI_AXES["nlu_methods"])
    recipe = f"all-MiniLM-L6-v2 on GLUE train subsets; {ICLR_NLU_RECIPE}"
    _table("mini_nlu", "Mini NLU: all-MiniLM-L6-v2, GLUE dev", rows, cols, recipe, average=True)
    # The ablation: SmolLM2's GSM8K NLL and MiniLM's GLUE avg; 'w/o reg' and 'all' are the main mini tables'
    # PiSSA and BA-LoRA runs. No GSM8K accuracy: 0-3% of 64 questions cannot separate the variants (the NLL
    # can), and the single-term runs were graded under balora-gsm8k v1, which may not share a column with v2.
    tasks = MINI_AXES["ablation_tasks"]
    label = f"GLUE avg ({', '.join(LABELS[task] for task in tasks)})"
    cols = _nll_column(f"{MINI_NLG_MODEL}_{{row}}")
    cols += [ColumnSpec(label, "glue", "score", "{task}_{row}", average_over=tasks)]
    ends = (("noreg", "pissa"), ("all", "ba-lora"))
    overrides = [(row, "gsm8k_nll", f"{nlg}_{m}") for row, m in ends]
    overrides += [(row, "glue", f"mini/nlu:{{task}}_{m}") for row, m in ends]
    recipe = "variants of the mini NLG / NLU BA-LoRA runs (iclr2026 presets) with λ switched off"
    rows, title = _rows(GRID["ablation"]["variants"]), "Mini ablation of the regularisers"
    _table("mini_ablation", title, rows, cols, recipe, overrides=tuple(overrides))
    # Bias probes on SST-2 (MiniLM), scored on the clean dev set: positives subsampled, or labels flipped.
    c, ratios, rows = MINI_IMBALANCE_CLASS, MINI_IMBALANCE_RATIOS, _rows(MINI_PROBES["methods"])
    run = partial(imbalance_run, "sst2", None, "{row}", c)
    cols = [col for r in ratios for col in _imbalance_columns(run(r), c, f"1:{r} ", f"{{0}}{r}")]
    title = "Mini probe, class imbalance: all-MiniLM-L6-v2 on SST-2 with the positive class kept at "
    _table("mini_imbalance", f"{title}{' / '.join(f'1:{r}' for r in ratios)}, dev (%)", rows, cols, sst2)
    cols = [ColumnSpec("clean", "0", "final.accuracy", "mini/nlu:sst2_{row}", scale=100)]
    levels = MINI_PROBES["noise_percents"]
    cols += _columns(levels, "final.accuracy", "sst2_{row}_noise{key}", "{}% flipped", scale=100)
    title = "Mini probe, label noise: all-MiniLM-L6-v2 on SST-2, final-model accuracy on the clean dev set "
    _table("mini_label_noise", f"{title}(%)", rows, cols, sst2)
    # Every λ of the NLG preset scaled: the NLL only (accuracy cannot separate the scales), and no train loss:
    # the Trainer's is the whole objective, at λ × 100 mostly the (negative) diversity and SVD terms.
    rows = [RowSpec("PiSSA (λ = 0)", "pissa")] + [RowSpec(f"BA-LoRA, λ × {s}", s) for s in MINI_LAMBDA_SCALES]
    overrides = (("pissa", "gsm8k_nll", f"{nlg}_pissa"), ("1", "gsm8k_nll", f"{nlg}_ba-lora"))
    title = "Mini probe, λ sensitivity: SmolLM2-135M-Instruct, GSM8K test subset solution NLL (nats/token)"
    recipe = f"the mini NLG BA-LoRA config with λ1, λ2, λ3 all multiplied; {ICLR_NLG_RECIPE}"
    cols = _nll_column(f"{MINI_NLG_MODEL}_ba-lora_lambda_x{{row}}")
    _table("mini_lambda_scale", title, rows, cols, recipe, overrides=overrides)
    # LoRA + Reg: the regularisers on standard LoRA init, beside LoRA, PiSSA and BA-LoRA.
    methods = MINI_PROBES["methods"]
    cols = _nll_column(f"{nlg}_{{row}}") + _columns(MINI_AXES["nlu_tasks"], "score", "mini/nlu:{key}_{row}")
    runs = {"gsm8k_nll": f"{MINI_NLG_MODEL}_lora-reg", "stsb": "mini/nlu:stsb_lora"}
    overrides = tuple(("lora-reg", col.key, runs.get(col.key, f"{col.key}_lora-reg")) for col in cols)
    title = "Mini probe, LoRA + Reg: SmolLM2 GSM8K solution NLL and MiniLM GLUE dev"
    recipe = (
        "LoRA + Reg = the LoRA configs with the iclr2026 regulariser preset (NLG / NLU); its STS-B cell is the "
        "LoRA runs: the three NLU terms are constant on STS-B's 1-column output, so LoRA + Reg trains exactly "
        "as LoRA there"
    )
    rows = _rows((methods[0], "lora-reg", *methods[1:]))
    _table("mini_lora_reg", title, rows, cols, recipe, overrides=overrides)


_paper_tables()
_mini_tables()
