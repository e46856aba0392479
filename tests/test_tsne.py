"""balora-tsne (tsne_visualization.py) on synthetic features: files, silhouette scores, --compare, bad input."""

import subprocess
import sys

import numpy as np
import pytest

from balora.cli import tsne as tsne_visualization


def _dump(folder, separation, n=80, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    features = rng.normal(size=(n, dim)).astype(np.float32)
    features[:, 0] += separation * labels  # class 1 shifted along one axis
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "features_step_final.npy", features)
    np.save(folder / "labels_step_final.npy", labels)
    return folder


def test_single_run_writes_pdf_png_and_silhouettes(tmp_path, capsys):
    run = _dump(tmp_path / "run", separation=12.0)
    scores = tsne_visualization.main(["--features_dir", str(run), "--output_dir", str(tmp_path / "out")])
    for suffix in ("pdf", "png"):
        assert (tmp_path / "out" / f"tsne_step_final.{suffix}").stat().st_size > 1000
    s = scores["run"]
    assert s["silhouette_raw"] > 0.3 and s["silhouette_2d"] > 0.5  # well-separated classes stay separated
    assert "silhouette_2d=" in capsys.readouterr().out


def test_compare_four_panels_orders_separation(tmp_path):
    dirs = [_dump(tmp_path / f"r{i}", separation=sep, seed=i) for i, sep in enumerate((0.0, 12.0, 0.0, 12.0))]
    titles = ["A LoRA", "A BA-LoRA", "B LoRA", "B BA-LoRA"]
    scores = tsne_visualization.main(
        [
            "--compare",
            "--features_dir",
            *map(str, dirs),
            "--titles",
            *titles,
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert (tmp_path / "out" / "tsne_compare_step_final.png").is_file()
    assert (tmp_path / "out" / "tsne_compare_step_final.pdf").is_file()
    assert scores["A BA-LoRA"]["silhouette_raw"] > scores["A LoRA"]["silhouette_raw"] + 0.2


def test_bad_input(tmp_path):
    run = _dump(tmp_path / "run", separation=1.0, n=20)
    with pytest.raises(FileNotFoundError, match="features_step_7.npy not found"):
        tsne_visualization.main(["--features_dir", str(run), "--output_dir", str(tmp_path), "--step", "7"])
    with pytest.raises(ValueError, match="perplexity"):  # 20 points < perplexity 30
        tsne_visualization.main(["--features_dir", str(run), "--output_dir", str(tmp_path)])
    # Command line: several runs without --compare is a usage error (exit code 2).
    proc = subprocess.run(
        [
            sys.executable,
            "tsne_visualization.py",
            "--features_dir",
            str(run),
            str(run),
            "--output_dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--compare" in proc.stderr


def test_cli_answers_a_missing_dump_with_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    run = _dump(tmp_path / "run", separation=1.0, n=40)
    monkeypatch.setattr(
        "sys.argv", ["balora-tsne", "--features_dir", str(run), "--output_dir", str(tmp_path), "--step", "7"]
    )
    assert tsne_visualization.cli() == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'features_step_7.npy'} not found") and err.count("\n") == 1
