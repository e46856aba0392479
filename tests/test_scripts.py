"""The study scripts: each is a one-line call of the study runner (balora/repro/run.py) with its study."""

import os
import subprocess
from pathlib import Path

from balora.repro.studies import REHEARSAL_ORDER, STUDIES

REPO = Path(__file__).resolve().parent.parent
NOT_STUDIES = ("setup_env.sh", "test.sh", "quickstart.sh", "gpu_check.sh", "rehearse.sh")
STUDY_SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.sh") if p.name not in NOT_STUDIES)


def run_script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("SEEDS", "MODELS", "METHODS", "GPUS", "TASKS")
    }
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def code_lines(path: Path) -> list[str]:
    return [
        line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_every_study_has_a_script_of_at_most_five_lines_calling_the_runner():
    # Every paper and mini study has its script (a new study may run as python -m balora.repro.run NAME).
    scripted = {name[: -len(".sh")] for name in STUDY_SCRIPTS}
    assert scripted <= set(STUDIES) and scripted >= {*REHEARSAL_ORDER, "mini", "mini_probes"}
    for name in [*STUDY_SCRIPTS, "rehearse.sh"]:
        lines = code_lines(REPO / "scripts" / name)
        assert len(lines) <= 5, name
        study = "rehearsal" if name == "rehearse.sh" else name[: -len(".sh")]
        assert lines[-1] == f'exec "$PY" -m balora.repro.run {study} "$@"', name
    assert not (REPO / "scripts" / "lib.sh").exists() and not (REPO / "scripts" / "mini_lib.sh").exists()


def test_a_script_passes_its_arguments_to_the_runner(tmp_path):
    proc = run_script(
        "tsne.sh", "--dry-run", "--seeds", "7", "--only", "bert", "--results_dir", str(tmp_path / "r"),
        "--outputs_dir", str(tmp_path / "o"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    todo = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("[todo]")]
    assert todo == ["tsne/bert-large_lora/seed7", "tsne/bert-large_ba-lora/seed7"]
    assert "# plan: 2 runs, 0 done, 2 to do" in proc.stdout
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()  # a dry run writes nothing


def test_bad_arguments_fail(tmp_path):
    proc = run_script("nlg_table.sh", "--dry-runn")
    assert proc.returncode == 2 and proc.stderr == "error: unrecognized arguments: --dry-runn\n"
    assert run_script("mini.sh", "--help").returncode == 0
    # The bash scripts' grid variables are refused, not silently replaced by the default grid.
    proc = run_script("model_range.sh", "--dry-run", env={"MODELS": "llama3-8b"})
    assert proc.returncode == 2
    assert (
        proc.stderr
        == "error: MODELS is set in the environment: choose it with --grid models=... (then unset it)\n"
    )


def test_gpu_check_dry_run_names_existing_configs_and_refuses_bad_input(tmp_path):
    proc = run_script("gpu_check.sh", "--dry-run", env={"OUT_DIR": str(tmp_path / "gpu")})
    assert proc.returncode == 0, proc.stderr
    steps = [line.split(":")[0][3:] for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert steps == [
        "regularizers_2598",
        "overhead_4x256",
        "overhead_16x512",
        "svd_path_check",
        "overhead_16x512_lobpcg",
        "rows_tap_16x512",
        "sweep",
        "generation",
        "train_pissa",
        "gsm8k_pissa",
        "gsm8k_nll_pissa",
        "train_ba-lora",
        "gsm8k_ba-lora",
        "gsm8k_nll_ba-lora",
    ]
    for config in (
        "configs/gpu/smollm2_gsm8k_pissa_zero2.yaml",
        "configs/gpu/smollm2_gsm8k_ba-lora_zero2.yaml",
    ):
        assert f"--config {config}" in proc.stdout and (REPO / config).is_file()
    assert not (tmp_path / "gpu").exists()
    bad = run_script("gpu_check.sh", "--dryrun")
    assert bad.returncode == 2 and "unknown argument '--dryrun'" in bad.stderr
    # Without the data it stops before anything runs, and says which file is missing.
    missing = run_script(
        "gpu_check.sh", env={"GSM8K_DIR": str(tmp_path / "nowhere"), "OUT_DIR": str(tmp_path / "gpu")}
    )
    assert missing.returncode == 2 and "nowhere/train.jsonl not found" in missing.stderr
    assert not (tmp_path / "gpu").exists()
