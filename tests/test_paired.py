"""Paired per-item comparisons: hand-computed differences, equal item sets, protocols, missing seeds."""

import json
import math
import statistics
from dataclasses import replace

import pytest

import aggregate_results
from balora.repro.paired import PairedSpec, build_paired, mini_nll_paired, paired_difference, paired_markdown
from balora.repro.results import ResultsError


def _seed(root, run, seed, scores, protocol_version="1", done=True):
    """results/<study>/<name>/seed<k>/ with eval/gsm8k_nll.{json,samples.jsonl} holding `scores`."""
    study, _, name = run.rpartition(":")
    seed_dir = root / study / name / f"seed{seed}"
    (seed_dir / "eval").mkdir(parents=True)
    (seed_dir / "eval" / "gsm8k_nll.json").write_text(
        json.dumps(
            {
                "score": statistics.fmean(scores.values()),
                "n": len(scores),
                "protocol": "balora-gsm8k-nll",
                "protocol_version": protocol_version,
            }
        )
    )
    (seed_dir / "eval" / "gsm8k_nll.samples.jsonl").write_text(
        "".join(
            json.dumps({"task_id": k, "nll_per_token": v, "tokens": 10}) + "\n" for k, v in scores.items()
        )
    )
    if done:
        (seed_dir / "DONE").write_text("")


SPEC = PairedSpec(
    "t",
    "test",
    "gsm8k_nll",
    "nll_per_token",
    higher_is_better=False,
    pairs=(("A − B", "s:a", "s:b"),),
    seeds=(1, 2, 3),
)


def test_differences_match_a_hand_computation(tmp_path):
    a1, b1 = {0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 1.0, 2: 3.5}  # d = -0.5, +1.0, -0.5
    a2, b2 = {0: 1.0, 1: 1.0, 2: 1.0}, {0: 1.25, 1: 1.25, 2: 1.0}  # d = -0.25, -0.25, 0
    for seed, (a, b) in {1: (a1, b1), 2: (a2, b2)}.items():
        _seed(tmp_path, "s:a", seed, a)
        _seed(tmp_path, "s:b", seed, b)
    row = build_paired(SPEC, tmp_path)["rows"][0]
    d1 = row["seeds"][1]
    assert d1.n == 3 and d1.a_better == 2  # lower NLL is better: the two -0.5 items
    assert d1.mean == pytest.approx(0.0)
    assert d1.se == pytest.approx(statistics.stdev([-0.5, 1.0, -0.5]) / math.sqrt(3))
    assert row["seeds"][2].mean == pytest.approx(-1 / 6) and row["seeds"][2].a_better == 2
    assert row["seeds"][3] is None  # seed 3 never ran
    assert row["n_seeds"] == 2 and row["mean"] == pytest.approx(-1 / 12)
    assert row["std"] == pytest.approx(statistics.stdev([0.0, -1 / 6]))
    markdown = paired_markdown(build_paired(SPEC, tmp_path))
    assert (
        "| A − B | +0.0000 ± 0.5000 (A better 2/3) | -0.1667 ± 0.0833 (A better 2/3) | missing | "
        "-0.0833 ± 0.1179 (n=2) |" in markdown
    )
    # higher-is-better counts the other way round
    assert paired_difference(a1, b1, higher_is_better=True).a_better == 1


def test_different_items_or_protocols_are_errors_not_comparisons(tmp_path):
    _seed(tmp_path, "s:a", 1, {0: 1.0, 1: 2.0})
    _seed(tmp_path, "s:b", 1, {0: 1.0, 2: 2.0})
    with pytest.raises(ResultsError, match=r"different items \(only in A: \['1'\], only in B: \['2'\]\)"):
        build_paired(SPEC, tmp_path)
    _seed(tmp_path, "s:a", 2, {0: 1.0})
    _seed(tmp_path, "s:b", 2, {0: 1.0}, protocol_version="2")
    with pytest.raises(ResultsError, match="protocol balora-gsm8k-nll v1.*v2"):
        build_paired(replace(SPEC, seeds=(2,)), tmp_path)


def test_unfinished_runs_and_bad_rows(tmp_path):
    _seed(tmp_path, "s:a", 1, {0: 1.0}, done=False)  # no DONE: an interrupted run does not count
    _seed(tmp_path, "s:b", 1, {0: 1.0})
    assert build_paired(SPEC, tmp_path)["rows"][0]["seeds"][1] is None
    (tmp_path / "s" / "b" / "seed1" / "eval" / "gsm8k_nll.samples.jsonl").write_text('{"task_id": 0}\n')
    (tmp_path / "s" / "a" / "seed1" / "DONE").write_text("")
    with pytest.raises(ResultsError, match=r"samples.jsonl:1: a row needs 'task_id' and 'nll_per_token'"):
        build_paired(SPEC, tmp_path)
    # A line in another encoding or truncated mid-write names the file and line.
    samples = tmp_path / "s" / "b" / "seed1" / "eval" / "gsm8k_nll.samples.jsonl"
    samples.write_bytes(b'{"task_id": 0, "nll_per_token": 1.0, "note": "caf\xe9"}\n')
    with pytest.raises(ResultsError, match=r"samples.jsonl:1: not a UTF-8 JSON line"):
        build_paired(SPEC, tmp_path)
    samples.write_text('{"task_id": 0, "nll_per_token": 1.0}\n{"task_id": 1, "nll_')
    with pytest.raises(ResultsError, match=r"samples.jsonl:2: not a UTF-8 JSON line"):
        build_paired(SPEC, tmp_path)


def test_the_cli_writes_the_mini_table_with_every_pair_listed(tmp_path):
    spec = mini_nll_paired()
    label, run_a, run_b = spec.pairs[0]
    _seed(tmp_path, run_a, 42, {0: 1.0, 1: 1.2})
    _seed(tmp_path, run_b, 42, {0: 1.1, 1: 1.2})
    out = aggregate_results.main(
        ["mini_nll_paired", "--results_dir", str(tmp_path), "--out_dir", str(tmp_path / "t")]
    )
    rows = out["mini_nll_paired"]["rows"]
    assert [r["label"] for r in rows] == [p[0] for p in spec.pairs] and len(rows) == 9
    assert rows[0]["seeds"]["42"] == {
        "n": 2,
        "mean": pytest.approx(-0.05),
        "se": pytest.approx(0.05),
        "a_better": 1,
    }
    assert rows[1]["n_seeds"] == 0
    markdown = (tmp_path / "t" / "mini_nll_paired.md").read_text()
    assert markdown.count("| missing | missing | missing | missing |") == 8
    assert not (tmp_path / "t" / "mini_nll_paired.tex").exists()


def test_the_95_percent_interval_over_seeds_is_student_t():
    from balora.repro.paired import seed_mean_ci95

    # mean 2, std 1, n = 3: half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    low, high = seed_mean_ci95([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 2.484138, abs=1e-6) and high == pytest.approx(2 + 2.484138, abs=1e-6)
    assert seed_mean_ci95([0.5]) is None and seed_mean_ci95([]) is None
    # Two seeds: t(0.975, 1) = 12.706, the interval is wide on purpose.
    low, high = seed_mean_ci95([0.0, 1.0])
    assert high - low == pytest.approx(2 * 12.7062 * (2**-0.5) / 2**0.5, rel=1e-4)
