"""A study script's flag without its value: one line naming the flag, exit 2, nothing started."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("flag", ["--seeds", "--only", "--results_dir", "--outputs_dir", "--grid"])
def test_a_script_flag_without_its_value_is_one_line(flag, tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "tsne.sh"), "--dry-run", flag],
        capture_output=True,
        text=True,
        env={**os.environ, "OUTPUTS_DIR": str(tmp_path / "o"), "RESULTS_DIR": str(tmp_path / "r")},
    )
    assert proc.returncode == 2 and proc.stderr == f"error: argument {flag}: expected one argument\n", (
        proc.stderr
    )
    assert not list(tmp_path.iterdir())
