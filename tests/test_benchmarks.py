"""Benchmark scripts: the overhead benchmark's JSON output, and the GPU-check summary (missing = shown)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check_summary  # noqa: E402
import overhead  # noqa: E402
import regularizers as regularizers_benchmark  # noqa: E402 - benchmarks/regularizers.py


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_gpu_check_summary_reads_every_source_and_marks_what_is_missing(tmp_path):
    train = tmp_path / "ba-lora" / "train"
    _write(
        train / "metrics.json",
        {
            "train_runtime": 77.9,
            "train_samples_per_second": 26.3,
            "final_logged": {"task_loss": 0.7158, "svd_loss": -1.5914},
        },
    )
    _write(train / "run.json", {"peak_memory": {"gpu_allocated_peak": 3 * 2**30}})
    _write(
        train / "log_history.json",
        [
            {"task_loss": 1.376, "step": 1},
            {"loss": 9.0},
            {"task_loss": 0.716, "step": 2},
            {"train_runtime": 77.9},
        ],
    )
    _write(tmp_path / "ba-lora" / "eval_gsm8k" / "metrics.json", {"score": 0.78, "n": 256})
    _write(
        tmp_path / "overhead_16x512.json",
        {
            "batch": 16,
            "seq_len": 512,
            "r": 8,
            "bf16": True,
            "step_s": {"pissa": 0.24, "ba-lora": 0.47},
            "step_ratio": 1.964,
            "peak_bytes": {"pissa": 2**30, "ba-lora": 2**30 + 2**26},
            "mem_ratio": 1.0625,
        },
    )
    terms = {
        "consistency": 0.0123,
        "diversity": 0.0045,
        "svd": 0.0006,
        "together": 0.016,
        "svd_logits_space": 0.2,
    }
    _write(
        tmp_path / "overhead_4x256.json",
        {
            "batch": 4,
            "seq_len": 256,
            "r": 8,
            "bf16": True,
            "step_s": {"pissa": 0.1, "ba-lora": 0.13},
            "step_ratio": 1.3,
            "floor_ratio": 1.28,
            "term_s": terms,
            "svd_path": "hidden space",
            "peak_bytes": {"pissa": 2**30, "ba-lora": 2**30},
            "mem_ratio": 1.0,
        },
    )
    _write(
        tmp_path / "sweep.json",
        {
            "model": "tiny-llama-256",
            "sweep": [
                {
                    "rows": 1024,
                    "vocab": 262144,
                    "step_ratio": 1.5,
                    "floor_ratio": 1.45,
                    "mem_ratio": 1.05,
                    "term_s": terms,
                }
            ],
        },
    )
    _write(
        tmp_path / "rows_tap_16x512.json",
        {
            "batch": 16,
            "seq_len": 512,
            "rows": 2598,
            "step_s": {"ba-lora rows tapped": 0.31, "ba-lora rows gathered": 0.32},
            "speedup": 1.032,
            "identical_loss_and_gradients": True,
        },
    )
    markdown, data = gpu_check_summary.summarize(tmp_path, ["pissa", "ba-lora"])
    assert (
        "Regulariser rows taken at the LM head vs gathered (16 × 512, 2598 rows): BA-LoRA step 0.3100 s vs "
        "0.3200 s, 1.032× faster; identical loss and gradients True." in markdown
    )
    rows = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| ")}
    assert rows["4 × 256, r = 8, bf16 True"].endswith(
        "| 1.300 | 1.280 | 1024 | 1024 | 1.000 | 12.3 / 4.5 / 0.6 (hidden space) |"
    )
    assert "| 1024 | 262144 | 1.500 | 1.450 | 1.050 | 12.3 | 4.5 | 0.60 | 200.0 |" in markdown
    assert "| 2 | 77.9 | 26.3 | 3.00 | 1.376 → 0.716 | 0.78 (256) | missing |" in rows["ba-lora"]
    assert rows["pissa"].count("missing") == 9  # nothing of PiSSA's run exists: every cell says so
    # An earlier overhead JSON (no floor, no split) shows them as missing.
    assert (
        "| 0.2400 | 0.4700 | 1.964 | missing | 1024 | 1088 | 1.062 | missing |"
        in rows["16 × 512, r = 8, bf16 True"]
    )
    assert "Generation benchmark: missing." in markdown
    assert data["methods"]["ba-lora"]["gsm8k_nll"] is None and data["methods"]["ba-lora"]["steps"] == 2
    gpu_check_summary.main([str(tmp_path)])
    assert (tmp_path / "summary.md").read_text() == markdown
    assert json.loads((tmp_path / "summary.json").read_text())["methods"]["ba-lora"]["gpu_peak_gib"] == 3.0


def test_regularizer_benchmark_times_every_case_and_the_summary_lists_them(tmp_path, capsys):
    import torch

    out, threads = tmp_path / "regularizers_64.json", torch.get_num_threads()
    try:  # in this process (its --threads sets this process's torch threads: restored after)
        regularizers_benchmark.main(
            ["--rows", "64", "--vocab", "300", "--hidden", "32", "--repeats", "2", "--threads", "1"]
            + ["--output", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert (result["rows"], result["vocab"], result["hidden"], result["device"]) == (64, 300, 32, "cpu")
    assert list(result["cases"]) == [
        "consistency",
        "diversity",
        "svd",
        "all three",
        "svd: Gram fwd+bwd",
        "svd: eigvalsh fwd+bwd",
        "svd, lobpcg eigensolver",
        "svd: lobpcg fwd+bwd",
        "svd, hidden space",
        "all three, svd in hidden space",
        "head factor (once per run)",
    ]
    assert all(len(c["times_ms"]) == 2 and c["median_ms"] > 0 for c in result["cases"].values())
    assert stdout.strip().splitlines()[-1].startswith("slowest=")
    markdown, _ = gpu_check_summary.summarize(tmp_path, ["pissa"])
    assert "| regulariser, fwd + bwd (64 rows × 300, torch.float32) | median ms |" in markdown
    assert f"| svd: Gram fwd+bwd | {result['cases']['svd: Gram fwd+bwd']['median_ms']:.2f} |" in markdown
    assert "Rows-tap comparison: missing." in markdown  # no rows_tap_16x512.json in this folder
    bad = subprocess.run(
        [sys.executable, "benchmarks/regularizers.py", "--rows", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--rows and --vocab must be at least 2" in bad.stderr


def test_overhead_benchmark_writes_its_summary_as_json(tmp_path):
    out = tmp_path / "overhead.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/overhead.py",
            "--model",
            "tiny-llama",
            "--batch",
            "2",
            "--seq_len",
            "256",
            "--warmup",
            "0",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--svd_eigensolver",
            "lobpcg",
            "--output",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["batch"], result["seq_len"], result["r"], result["bf16"]) == (2, 256, 8, False)
    assert result["svd_eigensolver"] == "lobpcg"
    assert len(result["step_times"]["pissa"]) == len(result["step_times"]["ba-lora"]) == 1
    assert result["step_ratio"] == result["step_s"]["ba-lora"] / result["step_s"]["pissa"]
    # The floor: a PiSSA step plus one reference forward of the same batch, measured in the same run.
    assert len(result["reference_times"]) == 1 and result["reference_forward_s"] > 0
    assert (
        result["floor_ratio"]
        == (result["step_s"]["pissa"] + result["reference_forward_s"]) / result["step_s"]["pissa"]
    )
    assert set(result["term_s"]) >= {"consistency", "diversity", "svd", "together", "svd_logits_space"}
    assert result["svd_path"] == "hidden space"
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == (
        f"step_ratio={result['step_ratio']:.3f} floor_ratio={result['floor_ratio']:.3f} "
        f"mem_ratio={result['mem_ratio']:.3f}"
    )
    assert lines[-2].startswith("above the floor: ") and "svd (hidden space)" in lines[-2]


@pytest.fixture
def workers_in_process(monkeypatch):
    """benchmarks/overhead.py with each worker run in this process (its `--worker` command line through
    `main`, its result read back from the JSON file it writes), not in a new interpreter (~5 s of imports
    each). Only for the modes that measure no memory (--interleave, --compare_heads, --compare_rows): a
    worker's own process is there for its peak memory, which real worker processes measure in
    test_overhead_benchmark_writes_its_summary_as_json."""
    import torch

    threads = torch.get_num_threads()  # a worker's --threads sets this process's

    def run_worker(base_cmd: list[str], worker: str, out: Path, env: dict) -> dict:
        assert base_cmd[:2] == [sys.executable, overhead.__file__]
        overhead.main([*base_cmd[2:], "--worker", worker, "--result", str(out)])
        return json.loads(out.read_text())

    monkeypatch.setattr(overhead, "_run_worker", run_worker)
    yield
    torch.set_num_threads(threads)


def test_overhead_sweep_prints_one_row_per_point(tmp_path, capsys, workers_in_process):
    out = tmp_path / "sweep.json"
    overhead.main(
        ["--sweep", "--interleave", "--model", "tiny-llama", "--sweep_rows", "256", "--sweep_vocab"]
        + ["600,1200", "--warmup", "0", "--steps", "1", "--repeats", "1", "--threads", "1"]
        + ["--term_repeats", "1", "--output", str(out)]
    )
    stdout = capsys.readouterr().out
    points = json.loads(out.read_text())["sweep"]
    assert [(p["rows"], p["vocab"]) for p in points] == [(256, 600), (256, 1200)]
    rows = [line for line in stdout.splitlines() if line.startswith("| 256 |")]
    assert len(rows) == 2 and rows[1].startswith("| 256 | 1200 |")
    assert (
        stdout.strip().splitlines()[-1].startswith(f"step_ratio={points[-1]['step_ratio']:.3f} floor_ratio=")
    )


def _overhead(tmp_path, capsys, *flags: str) -> tuple[str, dict]:
    """benchmarks/overhead.py on tiny-llama (2 × 128, 2 timed rounds, 1 thread) with `flags`: (stdout, JSON)."""
    out = tmp_path / "overhead.json"
    overhead.main(
        [*flags, "--model", "tiny-llama", "--batch", "2", "--seq_len", "128", "--warmup", "0", "--steps"]
        + ["2", "--repeats", "1", "--threads", "1", "--output", str(out)]
    )
    return capsys.readouterr().out, json.loads(out.read_text())


def test_overhead_interleaved_rounds_give_per_round_ratios(tmp_path, capsys, workers_in_process):
    stdout, result = _overhead(tmp_path, capsys, "--interleave", "--term_repeats", "1")
    rounds = result["rounds"]
    assert len(rounds) == 2 and all(len(r) == 3 for r in rounds)  # (PiSSA, reference forward, BA-LoRA)
    ratios = sorted(r[2] / r[0] for r in rounds)
    assert result["step_ratio"] == pytest.approx(sum(ratios) / 2)  # the median of two
    assert result["svd_path"] == "hidden space"
    assert stdout.strip().splitlines()[-1].endswith("mem_ratio=nan")


def test_overhead_compare_heads_times_both_heads_side_by_side(tmp_path, capsys, workers_in_process):
    stdout, result = _overhead(tmp_path, capsys, "--compare_heads")
    rounds = result["rounds"]
    # (PiSSA full head, PiSSA rows-only, BA-LoRA full head, BA-LoRA rows-only) per round
    assert len(rounds) == 2 and all(len(r) == 4 for r in rounds)
    assert result["speedup_pissa"] == pytest.approx(sum(sorted(r[0] / r[1] for r in rounds)) / 2)
    assert result["student_head_path"] == "supervised rows" and 0 < result["rows"] < result["tokens"]
    full_pissa, rows_pissa, full_ba, rows_ba = result["losses"]
    assert rows_pissa == pytest.approx(full_pissa, rel=1e-5) and rows_ba == pytest.approx(full_ba, rel=1e-5)
    assert full_ba != full_pissa  # the terms are in BA-LoRA's loss
    assert stdout.strip().splitlines()[-1].startswith("rows_only_speedup pissa=")


def test_overhead_compare_rows_times_tapped_and_gathered_rows_side_by_side(
    tmp_path, capsys, workers_in_process
):
    stdout, result = _overhead(tmp_path, capsys, "--compare_rows")
    rounds = result["rounds"]
    assert len(rounds) == 2 and all(len(r) == 2 for r in rounds)  # (rows tapped, rows gathered) per round
    assert result["speedup"] == pytest.approx(sum(sorted(r[1] / r[0] for r in rounds)) / 2)
    assert result["identical_loss_and_gradients"] is True
    assert result["losses"][0] == result["losses"][1]
    assert stdout.strip().splitlines()[-1].startswith("rows_tap_speedup=")
