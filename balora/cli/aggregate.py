"""Turn result folders into the paper's tables (Markdown + LaTeX + JSON), mean ± std over seeds.

    balora-aggregate nlg nlu ablation ablation_glue --results_dir results --out_dir results/tables --paper
    balora-aggregate nlg --paper --paper_file nlg_table.json     # against the v3-v5 table instead
    balora-aggregate mini_nlg mini_nlu mini_ablation --out_dir results/mini/tables
    balora-aggregate mini_nll_paired --out_dir results/mini/tables   # per-problem, paired
    (from a checkout: python aggregate_results.py ..., the same command)

Tables and their run names are defined in balora/repro/results.py (TABLES). Missing runs are printed as
"missing" and listed under the table; seeds with different configs under one run name, or a column
mixing protocol versions, stop with an error instead of being averaged. --results_dir and --paper_dir
default to results/ and results/paper/ of the checkout (of the working directory when installed).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from balora.cli.command import project_root, run_command
from balora.repro.paired import PAIRED_TABLES, build_paired, paired_json, paired_markdown
from balora.repro.results import (
    TABLES,
    ResultsError,
    build_table,
    load_paper_table,
    to_json,
    to_latex,
    to_markdown,
)

REPO_ROOT = project_root()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "tables",
        nargs="+",
        choices=sorted(TABLES) + sorted(PAIRED_TABLES),
        help="which tables to build (*_paired: per-item paired differences of run pairs)",
    )
    parser.add_argument(
        "--results_dir", default=str(REPO_ROOT / "results"), help="root holding <study>/ folders"
    )
    parser.add_argument(
        "--out_dir", default=None, help="write <table>.md/.tex/.json here (default: print only)"
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="add the paper's published numbers and the difference beside each column",
    )
    parser.add_argument(
        "--paper_dir", default=str(REPO_ROOT / "results" / "paper"), help="paper tables (JSON)"
    )
    parser.add_argument(
        "--paper_file",
        default=None,
        help="with --paper: compare with this file of --paper_dir instead of the table's own (the "
        "version whose recipe its configs run), e.g. nlg_table.json for the v3-v5 NLG table",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the tables' seed list")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Build the tables; returns {table name: to_json(table)}.

    Every table is built before any file is written: an error leaves the existing tables as they were.

    Raises:
        ResultsError: --results_dir does not exist, or its result files cannot be aggregated.
    """
    args = parse_args(argv)
    if not Path(args.results_dir).is_dir():
        raise ResultsError(
            f"--results_dir {args.results_dir} does not exist (the tables would be all 'missing'); "
            f"pass the folder holding the <study>/ result folders"
        )
    out, writes = {}, []
    for name in args.tables:
        if name in PAIRED_TABLES:
            paired_spec = PAIRED_TABLES[name]()
            if args.seeds:
                paired_spec = replace(paired_spec, seeds=tuple(args.seeds))
            paired = build_paired(paired_spec, args.results_dir)
            markdown = paired_markdown(paired)
            print(markdown)
            out[name] = paired_json(paired)
            writes.append((name, markdown, None, out[name]))
            continue
        spec = TABLES[name]()
        if args.seeds:
            spec = replace(spec, seeds=tuple(args.seeds))
        table = build_table(spec, args.results_dir)
        paper = None
        if args.paper and (args.paper_file or spec.paper_file):
            paper = load_paper_table(Path(args.paper_dir) / (args.paper_file or spec.paper_file))
        markdown = to_markdown(table, paper)
        print(markdown)
        out[name] = to_json(table)
        writes.append((name, markdown, to_latex(table, paper), out[name]))
    if args.out_dir:
        for write in writes:
            _write(Path(args.out_dir), *write)
    return out


def _write(out_dir: Path, name: str, markdown: str, latex: str | None, data: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(markdown)
    if latex is not None:
        (out_dir / f"{name}.tex").write_text(latex)
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def cli() -> int:
    """Console entry point `balora-aggregate` (and `python aggregate_results.py`): returns the exit status."""
    return run_command(main)


if __name__ == "__main__":
    sys.exit(cli())
