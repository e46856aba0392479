"""Reproduction scripts: every --dry-run lists the expected runs; lib.sh skips, resumes and copies."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# script -> (number of runs in the default plan, run ids that must be in it)
PLANS = {
    "nlg_table.sh": (
        3 * 4 * 3 * 3,
        [
            "nlg/llama2-7b_ba-lora_metamath/seed42",
            "nlg/gemma-7b_full_conversation/seed2024",
            "nlg/mistral-7b_pissa_python/seed1024",
        ],
    ),
    "nlu_table.sh": (
        8 * 10 * 3,
        [
            "nlu/mnli_deberta-v3-base_ba-lora/seed42",
            "nlu/stsb_deberta-v3-base_hadapter/seed2024",
            "nlu/qqp_deberta-v3-base_loha/seed1024",
        ],
    ),
    "rank_sweep.sh": (
        2 * (3 * 8 + 1) * 3,
        [
            "rank_sweep/llama2-7b_lora_r1/seed42",
            "rank_sweep/mistral-7b_ba-lora_r128/seed2024",
            "rank_sweep/mistral-7b_full/seed1024",
        ],
    ),
    "ablation.sh": (
        5 * 3 + 5 * 8 * 3,
        [
            "ablation/llama2-7b_noreg/seed42",
            "ablation/llama2-7b_all/seed2024",
            "ablation/glue_rte_svd/seed1024",
        ],
    ),
    "loss_curves.sh": (
        4 * 3 + 3 * 3,
        [
            "nlg/llama2-7b_ba-lora_metamath/seed42",
            "nlg/llama2-7b_full_metamath/seed2024",
            "rank_sweep/llama2-7b_pissa_r32/seed1024",
        ],
    ),
    "tsne.sh": (2 * 2 * 3, ["tsne/bert-large_lora/seed42", "tsne/gpt2-xl_ba-lora/seed2024"]),
    "mini.sh": (
        3 * 3 + 5 * 7 * 3 + 3 * 3 + 3 * 3,
        [
            "mini/nlg/smollm2_ba-lora/seed2024",
            "mini/nlu/sst2_adalora/seed1024",
            "mini/rank_sweep/smollm2_pissa_r64/seed42",
            "mini/ablation/stsb_svd/seed42",
            "mini/ablation/smollm2_consistency/seed42",
        ],
    ),
}


def run_script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("SEEDS", "MODELS", "METHODS", "GPUS")}
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def planned(stdout: str, status: str) -> list[str]:
    return [line.split()[1] for line in stdout.splitlines() if line.startswith(f"[{status}]")]


@pytest.mark.parametrize("script", sorted(PLANS))
def test_dry_run_lists_the_expected_runs(script, tmp_path):
    proc = run_script(
        script,
        "--dry-run",
        "--results_dir",
        str(tmp_path / "results"),
        "--outputs_dir",
        str(tmp_path / "outputs"),
    )
    assert proc.returncode == 0, proc.stderr
    expected_count, must_have = PLANS[script]
    todo = planned(proc.stdout, "todo")
    assert len(todo) == expected_count, proc.stdout[-2000:]
    assert len(set(todo)) == len(todo), "a run id appears twice"
    for run_id in must_have:
        assert run_id in todo
    # One summary per sweep (loss_curves.sh runs two: the NLG table's and the rank sweep's).
    plans = re.findall(r"^# plan: (\d+) runs, 0 done, (\d+) to do", proc.stdout, flags=re.M)
    assert (
        plans
        and sum(int(total) for total, _ in plans) == sum(int(todo) for _, todo in plans) == expected_count
    )
    # Every run prints the command(s) it would launch and where its results go.
    assert proc.stdout.count("    train:") == expected_count
    assert proc.stdout.count(f"-> {tmp_path / 'results'}") == expected_count
    # The seed loop is the paper's.
    assert {r.rsplit("/", 1)[1] for r in todo} == {"seed42", "seed1024", "seed2024"}
    # Nothing was created by a dry run.
    assert not (tmp_path / "results").exists() and not (tmp_path / "outputs").exists()


def test_mini_dry_run_uses_existing_configs_and_prints_an_estimate(tmp_path):
    proc = run_script("mini.sh", "--dry-run", "--results_dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert "!! missing file" not in proc.stdout, "a mini config referenced by mini.sh does not exist"
    summary = next(line for line in proc.stdout.splitlines() if line.startswith("# plan:"))
    hours = float(summary.split("=")[-1].split()[0])
    assert 4.0 < hours < 10.0, summary  # the grid is sized for ~8 h on 2 cores
    assert "--limit 64" in proc.stdout and "configs/mini/smollm2_gsm8k_ba-lora.yaml" in proc.stdout
    assert "--lambda_consistency 0 --lambda_diversity 0" in proc.stdout  # the SVD-only ablation variant


def test_finished_runs_are_skipped_and_only_filters(tmp_path):
    results = tmp_path / "results"
    done = results / "nlu" / "rte_deberta-v3-base_lora" / "seed42"
    done.mkdir(parents=True)
    (done / "DONE").write_text("x\n")
    proc = run_script("nlu_table.sh", "--dry-run", "--only", "nlu/rte_", "--results_dir", str(results))
    assert proc.returncode == 0, proc.stderr
    assert planned(proc.stdout, "done") == ["nlu/rte_deberta-v3-base_lora/seed42"]
    assert len(planned(proc.stdout, "todo")) == 10 * 3 - 1
    assert "# plan: 30 runs, 1 done, 29 to do" in proc.stdout
    proc = run_script("nlu_table.sh", "--dry-run", "--seeds", "7", "--only", "sst2_.*_bitfit")
    assert planned(proc.stdout, "todo") == ["nlu/sst2_deberta-v3-base_bitfit/seed7"]


def test_bad_arguments_fail(tmp_path):
    proc = run_script("nlg_table.sh", "--dry-runn")
    assert proc.returncode == 2 and "unknown argument" in proc.stderr
    assert run_script("mini.sh", "--help").returncode == 0


STAND_IN = r"""
set -euo pipefail
SEEDS="1 2"
source "{lib}"
lib_parse_args "$@"
for seed in $SEEDS; do
  if run_begin study run_a "$seed" 10; then
    stage train "$PY" -c "
import json, os, sys
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
open(os.path.join('{tmp}', 'train_calls'), 'a').write('x')
open(os.path.join(out, 'config.yaml'), 'w').write('seed: ' + sys.argv[2] + '\n')
for name, payload in (('run.json', {{}}), ('metrics.json', {{'train_loss': 1.0}}), ('log_history.json', [])):
    json.dump(payload, open(os.path.join(out, name), 'w'))
open(os.path.join(out, 'big.safetensors'), 'w').write('weights')
" "$RUN_OUT/train" "$seed"
    stage eval_x "$PY" -c "
import json, os, sys
if os.path.exists(os.path.join('{tmp}', 'fail_eval')):
    sys.exit('eval failed on purpose')
os.makedirs(sys.argv[1], exist_ok=True)
json.dump({{'score': 50.0, 'protocol_version': '1', 'n': 3}}, open(os.path.join(sys.argv[1], 'metrics.json'), 'w'))
json.dump({{'task_id': 0, 'score': 1.0}}, open(os.path.join(sys.argv[1], 'samples.jsonl'), 'w'))
" "$RUN_OUT/eval_x"
    run_finish "$RUN_OUT/train" x="$RUN_OUT/eval_x"
  fi
done
lib_summary
"""


def test_lib_stages_resume_and_copy_only_small_files(tmp_path):
    script = tmp_path / "standin.sh"
    script.write_text(STAND_IN.format(lib=REPO / "scripts" / "lib.sh", tmp=tmp_path))
    results, outputs = tmp_path / "results", tmp_path / "outputs"
    args = ["bash", str(script), "--results_dir", str(results), "--outputs_dir", str(outputs)]

    (tmp_path / "fail_eval").write_text("")
    first = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert first.returncode != 0 and "eval failed on purpose" in first.stderr
    assert not (results / "study" / "run_a" / "seed1" / "DONE").exists()  # an interrupted run is not done

    (tmp_path / "fail_eval").unlink()
    # Per-item scores travel only for the benches named in KEEP_ITEM_SCORES (default: gsm8k_nll).
    second = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KEEP_ITEM_SCORES": "gsm8k_nll x"},
    )
    assert second.returncode == 0, second.stderr
    assert "train: already done" in second.stdout  # resumed at the failed stage
    # Each run says where the sweep is: k of the runs left, and their estimated time (10 s each here).
    assert "# plan: 2 runs, 0 done, 2 to do; estimated time of the runs to do: 20 s" in second.stdout
    assert "; 1 of 2, ~1 min of estimated work left incl. this run)" in second.stdout
    assert "; 2 of 2, ~1 min of estimated work left incl. this run)" in second.stdout
    assert (tmp_path / "train_calls").read_text() == "xx"  # seed 1 trained once, seed 2 once
    for seed in (1, 2):
        res = results / "study" / "run_a" / f"seed{seed}"
        assert (res / "DONE").exists()
        assert sorted(p.name for p in res.rglob("*") if p.is_file()) == [
            "DONE",
            "config.yaml",
            "log_history.json",
            "metrics.json",
            "run.json",
            "x.json",
            "x.samples.jsonl",
        ]
        assert json.loads((res / "eval" / "x.samples.jsonl").read_text()) == {"task_id": 0, "score": 1.0}
        assert (outputs / "study" / "run_a" / f"seed{seed}" / "train" / "big.safetensors").exists()

    third = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0
    assert planned(third.stdout, "done") == ["study/run_a/seed1", "study/run_a/seed2"]
    assert (tmp_path / "train_calls").read_text() == "xx"

    # The copied folders aggregate.
    from balora.repro import results as R

    run = R.load_run(results / "study" / "run_a")
    assert sorted(run.seeds) == [1, 2] and run.seeds[1].metrics["x.score"] == 50.0


def test_a_stop_file_ends_the_sweep_before_its_next_run_and_resume_continues(tmp_path):
    script = tmp_path / "standin.sh"
    script.write_text(STAND_IN.format(lib=REPO / "scripts" / "lib.sh", tmp=tmp_path))
    results, outputs = tmp_path / "results", tmp_path / "outputs"
    args = ["bash", str(script), "--results_dir", str(results), "--outputs_dir", str(outputs)]
    outputs.mkdir()
    (outputs / "STOP").write_text("")
    stopped = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 3 and "STOP exists: stopped before study/run_a/seed1" in stopped.stderr
    assert not (tmp_path / "train_calls").exists() and not (results / "study").exists()
    (outputs / "STOP").unlink()
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "train_calls").read_text() == "xx"


@pytest.mark.slow
def test_nlg_pipeline_end_to_end_with_the_tiny_model(tmp_path, shared_data):
    """train_nlg.py -> eval/gsm8k.py -> results folder -> table, through lib.sh's NLG helpers."""
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    tiny = (REPO / "configs" / "tiny" / "nlg.yaml").read_text().replace("max_steps: 6", "max_steps: 2")
    (cfg_dir / "tiny_gsm8k_ba-lora.yaml").write_text(tiny)
    script = tmp_path / "e2e.sh"
    script.write_text(f"""
set -euo pipefail
SEEDS="42"
source "{REPO / "scripts" / "lib.sh"}"
lib_parse_args "$@"
export GPUS=cpu NLG_CONFIG_DIR={cfg_dir}
MODEL_ID[tiny]=tiny-llama
SUBSET_BENCHES[gsm8k]=gsm8k
EVAL_ARGS[gsm8k]="--data {shared_data}/gsm8k/test.jsonl --limit 1 --max_new_tokens 4 --batch_size 1"
for seed in $SEEDS; do
  if run_begin e2e tiny_ba-lora "$seed"; then
    nlg_train_and_eval tiny ba-lora gsm8k "$seed" --lambda_svd 0
  fi
done
lib_summary
""")
    results = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(script), "--results_dir", str(results), "--outputs_dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from balora.repro import results as R

    run = R.load_run(results / "e2e" / "tiny_ba-lora")
    seed = run.seeds[42]
    assert (
        seed.config["lambda_svd"] == 0.0 and seed.config["lambda_consistency"] > 0
    )  # the override is recorded
    assert seed.metrics["gsm8k.n"] == 1 and "trainable_params" in seed.metrics
    assert (results / "e2e" / "tiny_ba-lora" / "seed42" / "log_history.json").exists()
    spec = R.TableSpec(
        "e2e",
        "E2E",
        "e2e",
        rows=(R.RowSpec("BA-LoRA", "tiny_ba-lora"),),
        columns=(R.ColumnSpec("GSM8K", "gsm8k", "gsm8k.score"),),
        seeds=(42,),
    )
    table = R.build_table(spec, results)
    assert table.cells["tiny_ba-lora"]["gsm8k"].n == 1 and table.params["tiny_ba-lora"] > 0


STALE_STAGE = r"""
set -euo pipefail
SEEDS="42"
source "{lib}"
lib_parse_args "$@"
if run_begin study run_b 42 10; then
  stage train "$PY" -c "open('{tmp}/train_calls', 'a').write('x')" --config "{tmp}/cfg.yaml"
fi
"""


def test_a_stage_finished_with_another_config_is_an_error_not_reused(tmp_path):
    """Regression: mini.sh copied a stale STS-B run (old config, results folder deleted, outputs kept)
    as if it were the new one ("train: already done")."""
    script = tmp_path / "stale.sh"
    script.write_text(STALE_STAGE.format(lib=REPO / "scripts" / "lib.sh", tmp=tmp_path))
    args = [
        "bash",
        str(script),
        "--results_dir",
        str(tmp_path / "results"),
        "--outputs_dir",
        str(tmp_path / "outputs"),
    ]
    (tmp_path / "cfg.yaml").write_text("max_train_samples: null\n")
    assert subprocess.run(args, capture_output=True, text=True, timeout=60).returncode == 0
    same = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert same.returncode == 0 and "train: already done" in same.stdout  # same config: resumed
    (tmp_path / "cfg.yaml").write_text("max_train_samples: 2000\n")
    edited = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert edited.returncode != 0
    assert "another command or config" in edited.stderr and "Delete" in edited.stderr
    assert (tmp_path / "train_calls").read_text() == "x"  # never rerun or reused silently


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
