"""The study runner (balora/repro/run.py): bad input, stages, skip, resume, STOP, results, a killed run."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from balora.repro import provenance
from balora.repro import run as R
from balora.repro.studies import RunSpec

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def runner(*args: str, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    return subprocess.run(
        [PY, "-m", "balora.repro.run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "error: unknown study 'nope' (studies: nlg_table, "),
        (["tiny", "--seeds", "42 42"], "error: --seeds: seed 42 is listed twice"),
        (["tiny", "--seeds", "abc"], "error: --seeds: 'abc' is not a non-negative integer seed"),
        (["tiny", "--seeds", " "], "error: --seeds: empty seed list"),
        (["tiny", "--seeds"], "error: argument --seeds: expected one argument"),
        (["tiny", "--partition", "gpu"], "error: --partition: SLURM options need --executor slurm"),
        (
            ["tiny", "--time_minutes", "60", "--nodes", "2"],
            "error: --time_minutes, --nodes: SLURM options need",
        ),
        (["tiny", "--quick"], "error: --quick is a rehearsal setting: pass it with --rehearse"),
        (
            ["tiny", "--grid", "foo=1"],
            "error: --grid foo: tiny has no axis 'foo' (its axes: max_steps, save_steps)",
        ),
        (["tiny", "--only", "("], "error: --only '(': not a regular expression"),
        (["tiny", "--dry-runn"], "error: unrecognized arguments: --dry-runn"),
        (["tiny", "--executor", "pbs"], "error: argument --executor: invalid choice: 'pbs'"),
        (
            ["tiny", "--executor", "slurm"],
            "error: no `sbatch` or `srun` on PATH: --executor slurm submits from",
        ),
        (
            ["tiny", "--executor", "submitit-local", "--partition", "gpu"],
            "error: --partition: SLURM options need",
        ),
        (
            ["nlu_table", "--grid", "tasks=wnli"],
            "error: nlu_table: configs/glue/wnli_deberta-v3-base_full.yaml not found (needed by "
            "nlu/wnli_deberta-v3-base_full/seed42): a grid value without a config",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path):
    proc = runner(
        *args, "--results_dir", str(tmp_path / "r"), "--outputs_dir", str(tmp_path / "o"), timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == "" and not list(tmp_path.iterdir())


def test_finished_runs_are_skipped_and_only_filters(tmp_path, capsys):
    results = tmp_path / "results"
    done = results / "nlu" / "rte_deberta-v3-base_lora" / "seed42"
    done.mkdir(parents=True)
    (done / "DONE").write_text("x\n")
    args = ["nlu_table", "--dry-run", "--only", "nlu/rte_", "--results_dir", str(results)]
    assert R.main(args) == 0
    out = capsys.readouterr().out
    assert "[done] nlu/rte_deberta-v3-base_lora/seed42" in out and out.count("[todo]") == 10 * 3 - 1
    assert "# plan: 30 runs, 1 done, 29 to do" in out
    assert R.main(["nlu_table", "--dry-run", "--seeds", "7", "--only", "sst2_.*_bitfit"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("[todo]")] == [
        "nlu/sst2_deberta-v3-base_bitfit/seed7"
    ]


def test_bash_compatible_stage_fingerprints(tmp_path):
    """The markers scripts/lib.sh left in outputs/ stay valid: the same sha256 of the command and configs."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lora_r: 8\n")
    argv = ["deepspeed", "--include", "localhost:0,1", "x.py", "--config", str(cfg), "--deepspeed", "", "a b"]
    bash = r"""f() { { printf '%q ' "$@"; printf '\n'; for a in "$@"; do case "$a" in
      *.yaml|*.yml|*.json) [ -f "$a" ] && { printf '%s\n' "$a"; cat "$a"; } ;; esac; done; } | sha256sum | cut -d' ' -f1; }
    f "$@" """
    proc = subprocess.run(["bash", "-c", bash, "f", *argv], capture_output=True, text=True, check=True)
    assert R.fingerprint(argv) == proc.stdout.strip()


# A stand-in training and evaluation (real subprocesses): the training writes the small files and a
# large one; the evaluation fails while <tmp>/fail_eval exists.
TRAIN = """
import json, os, sys
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
open(os.path.join(sys.argv[2], 'train_calls'), 'a').write('x')
open(os.path.join(out, 'config.yaml'), 'w').write('seed: 1\\n')
for name, payload in (('run.json', {}), ('metrics.json', {'train_loss': 1.0}), ('log_history.json', [])):
    json.dump(payload, open(os.path.join(out, name), 'w'))
open(os.path.join(out, 'big.safetensors'), 'w').write('weights')
"""
EVAL = """
import json, os, sys
if os.path.exists(os.path.join(sys.argv[2], 'fail_eval')):
    sys.exit('eval failed on purpose')
os.makedirs(sys.argv[1], exist_ok=True)
json.dump({'score': 50.0, 'protocol_version': '1', 'n': 3}, open(os.path.join(sys.argv[1], 'metrics.json'), 'w'))
json.dump({'task_id': 0, 'score': 1.0}, open(os.path.join(sys.argv[1], 'samples.jsonl'), 'w'))
"""


def _stand_in_run(tmp_path: Path, cfg: Path | None = None) -> R.PlannedRun:
    spec = RunSpec(
        "study", "run_a", 1, "nlg", "tiny", "lora", "configs/tiny/nlg.yaml", benches=("gsm8k_nll",)
    )
    out = tmp_path / "outputs" / spec.run_id
    config = ["--config", str(cfg)] if cfg else []
    stages = [
        R.Stage(
            "train",
            [PY, "-c", TRAIN, str(out / "train"), str(tmp_path), *config],
            str(out),
            str(out / "train"),
        ),
        R.Stage(
            "eval_gsm8k_nll", [PY, "-c", EVAL, str(out / "eval"), str(tmp_path)], str(out), str(out / "eval")
        ),
    ]
    res = tmp_path / "results" / spec.run_id
    return R.PlannedRun(spec, str(out), str(out), str(res), stages, [("gsm8k_nll", str(out / "eval"))])


def test_an_interrupted_run_resumes_at_the_failed_stage_and_copies_only_small_files(tmp_path, capsys):
    run = _stand_in_run(tmp_path)
    opts = R.Options(study="tiny")
    (tmp_path / "fail_eval").write_text("")
    with pytest.raises(R.StageError, match="stage eval_gsm8k_nll failed"):
        R.execute(run, opts, PY)
    assert not Path(run.res).exists()  # an interrupted run is not done
    (tmp_path / "fail_eval").unlink()
    R.execute(run, opts, PY)
    assert "train: already done" in capsys.readouterr().out  # resumed at the failed stage
    assert (tmp_path / "train_calls").read_text() == "x"
    res = Path(run.res)
    assert sorted(str(p.relative_to(res)) for p in res.rglob("*") if p.is_file()) == [
        "DONE",
        "config.yaml",
        "eval/gsm8k_nll.json",
        "eval/gsm8k_nll.samples.jsonl",  # per-item records of the benches in KEEP_ITEM_SCORES
        "log_history.json",
        "metrics.json",
        "run.json",
    ]
    assert json.loads((res / "eval" / "gsm8k_nll.json").read_text())["score"] == 50.0
    # Killed after the command finished but before its marker: the finished stage is not run again.
    (Path(run.run_out) / ".stage_train.done").unlink()
    R.execute(run, opts, PY)
    assert "train: finished before the interruption" in capsys.readouterr().out
    assert (tmp_path / "train_calls").read_text() == "x"


def test_a_stage_finished_with_another_config_is_an_error_not_reused(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("max_train_samples: null\n")
    R.execute(_stand_in_run(tmp_path, cfg), R.Options(study="tiny"), PY)
    cfg.write_text("max_train_samples: 2000\n")
    run = _stand_in_run(tmp_path, cfg)
    with pytest.raises(R.StageError, match="(?s)made with another command or config file than now.*Delete"):
        R.execute(run, R.Options(study="tiny"), PY)
    assert (tmp_path / "train_calls").read_text() == "x"  # never rerun or reused silently


def test_a_stop_file_ends_the_sweep_before_its_next_run(tmp_path, capsys):
    outputs, results = tmp_path / "outputs", tmp_path / "results"
    outputs.mkdir()
    (outputs / "STOP").write_text("")
    args = ["tiny", "--results_dir", str(results), "--outputs_dir", str(outputs), "--seeds", "1 2"]
    assert R.main(args) == 3
    assert "STOP exists: stopped before tiny/tiny_ba-lora/seed1" in capsys.readouterr().err
    assert sorted(p.name for p in outputs.iterdir()) == ["STOP"] and not results.exists()
    # A finished run is skipped without starting anything, STOP or not.
    done = results / "tiny" / "tiny_ba-lora"
    for seed in (1, 2):
        (done / f"seed{seed}").mkdir(parents=True)
        (done / f"seed{seed}" / "DONE").write_text("x\n")
    assert R.main(args) == 0
    out = capsys.readouterr().out
    assert "[done] tiny/tiny_ba-lora/seed1" in out and "# plan: 2 runs, 2 done, 0 to do" in out
    assert sorted(p.name for p in outputs.iterdir()) == ["STOP"]


def _children(pid: int) -> dict[int, str]:
    """The live child processes of pid and their state letter (Linux /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found[int(stat.parent.name)] = fields[0]
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _state(pid: int) -> str | None:
    """A process's state letter (R, S, Z, ...), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _adapters(train: Path) -> dict[str, bytes]:
    files = [p for p in train.rglob("*.safetensors") if "checkpoint-" not in str(p)]
    assert files
    return {str(p.relative_to(train)): p.read_bytes() for p in files}


@pytest.mark.slow
def test_a_training_killed_mid_run_resumes_from_its_checkpoint_bit_for_bit(tmp_path, shared_data, capsys):
    """SIGKILL to the runner's process group after the first checkpoint; the rerun resumes the training
    from its last complete checkpoint and ends with the adapter of an uninterrupted run, bit for bit."""
    grid = ["--grid", "max_steps=20", "--grid", "save_steps=2"]

    def dirs(name: str) -> list[str]:
        return [
            "--results_dir",
            str(tmp_path / name / "results"),
            "--outputs_dir",
            str(tmp_path / name / "outputs"),
        ]

    train = tmp_path / "killed" / "outputs" / "tiny" / "tiny_ba-lora" / "seed42" / "train"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [PY, "-m", "balora.repro.run", "tiny", *grid, *dirs("killed")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while provenance.last_complete_checkpoint(train) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (train / "metrics.json").exists()  # killed mid-training

    # The uninterrupted reference: the run's training command as the runner starts it, from the PiSSA
    # decomposition the killed run made before training (its init folder instead of a second one).
    (reference,) = R.make_plan(R.options_from_args(["tiny", *grid, *dirs("reference")]))
    assert [stage.name for stage in reference.stages] == ["pissa_init", "train", "eval_gsm8k_nll"]
    argv = [a.replace(str(tmp_path / "reference"), str(tmp_path / "killed")) if "pissa_init" in a else a
            for a in reference.stages[1].argv]  # fmt: skip
    ref = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    resumed = runner("tiny", *grid, *dirs("killed"))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "    pissa_init: already done" in resumed.stdout
    assert "    train: resuming from checkpoint-" in resumed.stdout
    assert "--resume_from_checkpoint last" in resumed.stdout
    assert _adapters(train) == _adapters(
        tmp_path / "reference" / "outputs" / "tiny" / "tiny_ba-lora" / "seed42" / "train"
    )
    results = tmp_path / "killed" / "results" / "tiny" / "tiny_ba-lora" / "seed42"
    assert (results / "DONE").is_file() and (results / "eval" / "gsm8k_nll.json").is_file()
    # Finished: a rerun skips it.
    capsys.readouterr()
    assert R.main(["tiny", *grid, *dirs("killed")]) == 0
    assert "[done] tiny/tiny_ba-lora/seed42" in capsys.readouterr().out


@pytest.mark.slow
def test_submitit_local_runs_each_run_as_a_job_and_skips_what_is_done(tmp_path, shared_data, capsys):
    """--executor submitit-local: the run's chain (execute_run) as a real subprocess job, its record in the
    run folder; submitting again while it runs submits nothing, and after it finished the run is done."""
    dirs = ["--results_dir", str(tmp_path / "results"), "--outputs_dir", str(tmp_path / "outputs")]
    args = ["tiny", "--grid", "max_steps=2", *dirs, "--executor", "submitit-local"]

    def submit(*extra: str) -> subprocess.CompletedProcess:
        # Output to a file: the job, a child of the submitting process, would hold a pipe open until it ends.
        with open(tmp_path / "submit.log", "w+") as log:
            proc = subprocess.run(
                [PY, "-m", "balora.repro.run", *args, *extra], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, timeout=300,
            )  # fmt: skip
            log.seek(0)
            proc.stdout = log.read()
        return proc

    first = submit("--log_dir", str(tmp_path / "jobs"))
    assert first.returncode == 0, first.stdout
    assert "[job ] tiny/tiny_ba-lora/seed42: job " in first.stdout and "# 1 submitted" in first.stdout
    run_dir = tmp_path / "outputs" / "tiny" / "tiny_ba-lora" / "seed42"
    records = json.loads((run_dir / "jobs.json").read_text())
    assert len(records) == 1 and records[0]["executor"] == "submitit-local"
    # Submitting again (here, in-process: it must not start a job) while the job is queued or running.
    capsys.readouterr()
    assert R.main([*args, "--log_dir", str(tmp_path / "jobs")]) == 0
    assert "# 0 submitted" in capsys.readouterr().out  # not resubmitted
    done = tmp_path / "results" / "tiny" / "tiny_ba-lora" / "seed42" / "DONE"
    deadline = time.monotonic() + 600
    err = run_dir / f"job-{records[0]['job_id']}.err"
    while not done.exists():
        log = err.read_text() if err.is_file() else ""
        assert time.monotonic() < deadline and "job triggered an exception" not in log, log[-3000:]
        time.sleep(1)
    assert R.main(args) == 0
    finished = capsys.readouterr().out
    assert "# plan: 1 runs, 1 done, 0 to do" in finished and "submitted" not in finished


# --- the rehearsal's preloaded stage runner (balora/repro/stage_runner.py) ------------------------------

# Runs each command of argv (a JSON list) through stage_runner.run in a fresh process, as the runner
# does, with the command's stdout and stderr sent to files; prints [[exit status, forked], ...].
STAGE_DRIVER = """
import json, os, sys
from balora.repro import stage_runner
results = []
for i, argv in enumerate(json.loads(sys.argv[1])):
    out = os.open(f"{sys.argv[2]}/{i}.out", os.O_WRONLY | os.O_CREAT)
    err = os.open(f"{sys.argv[2]}/{i}.err", os.O_WRONLY | os.O_CREAT)
    saved = os.dup(1), os.dup(2)
    os.dup2(out, 1), os.dup2(err, 2)
    status = stage_runner.run(argv, dict(os.environ), sys.argv[3])
    os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    results.append(status)
print(json.dumps(results))
"""
CRASH = "raise RuntimeError('a crash on purpose')"
MESSAGE = "import sys; sys.exit('a user error, in one line')"
KILLED = "import os, signal; print('before', flush=True); os.kill(os.getpid(), signal.SIGKILL)"


def _through(commands: list[list[str]], logs: Path, forked: bool) -> list[list]:
    """Exit status and forked flag of each command, run forked by the preloaded runner (forked=True) or
    as subprocesses (the runner's path for real runs)."""
    logs.mkdir()
    driver = STAGE_DRIVER if forked else STAGE_DRIVER.replace("stage_runner.run(", "_subprocess(")
    driver = driver.replace(
        "results = []",
        "import subprocess\n_subprocess = lambda a, e, c: [subprocess.run(a, env=e, cwd=c).returncode, False]\n"
        "results = []",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "BALORA_REHEARSAL": "1"}
    proc = subprocess.run(
        [PY, "-c", driver, json.dumps(commands), str(logs), str(REPO)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.slow
def test_a_stage_forked_from_the_preloaded_runner_ends_as_its_subprocess_does(tmp_path):
    """The same files, exit status (0, a user error's 2, a crash's 1, a signal's -9) and output as the
    command run as a subprocess; a launcher or `python -c` runs as a subprocess."""
    for name, code in (("crash", CRASH), ("message", MESSAGE), ("killed", KILLED)):
        (tmp_path / f"{name}.py").write_text(code + "\n")

    def commands(out: Path) -> list[list[str]]:
        train = [PY, "finetune_glue.py", "--config", "configs/glue/rte_deberta-v3-base_lora.yaml",
                 "--output_dir", str(out), "--seed", "42", *R.GLUE_REHEARSE]  # fmt: skip
        return [
            train,
            [PY, "finetune_glue.py", "--config", "configs/glue/nope.yaml"],  # a user error: exit 2
            [PY, "eval/gsm8k_nll.py", "--help"],  # a shim that re-executes as `python -P -m balora.cli...`
            [PY, str(tmp_path / "crash.py")],
            [PY, str(tmp_path / "message.py")],
            [PY, str(tmp_path / "killed.py")],
            [PY, "-c", "import sys; sys.exit(3)"],
        ]

    forked = _through(commands(tmp_path / "forked"), tmp_path / "forked_logs", forked=True)
    fresh = _through(commands(tmp_path / "fresh"), tmp_path / "fresh_logs", forked=False)
    assert [status for status, _ in forked] == [status for status, _ in fresh] == [0, 2, 0, 1, 1, -9, 3]
    assert [how for _, how in forked] == [True] * 6 + [False]

    def files(out: Path) -> dict[str, bytes]:
        # runs/: TensorBoard event files, named by their wall time and process id
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
                and not p.relative_to(out).parts[0] == "runs"}  # fmt: skip

    a, b = files(tmp_path / "forked"), files(tmp_path / "fresh")
    assert sorted(a) == sorted(b) and "adapter/adapter_model.safetensors" in a, sorted(a)
    volatile = ("run.json", "metrics.json", "config.yaml", "log_history.json")  # timings, output paths
    for name in a:
        if name.endswith("adapter_config.json"):  # target_modules: a set, in the order of the hash seed
            x, y = (
                {**c, "target_modules": sorted(c["target_modules"])}
                for c in map(json.loads, (a[name], b[name]))
            )
            assert x == y, name
        elif not name.endswith(volatile):
            assert a[name] == b[name], name
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("forked", "fresh")]
    for key in ("eval_accuracy", "train_loss", "trained", "method"):
        assert metrics[0].get(key) == metrics[1].get(key), key
    for i in range(1, 6):  # what the command wrote, to the same stdout and stderr
        for stream in ("out", "err"):
            assert (tmp_path / "forked_logs" / f"{i}.{stream}").read_text() == (
                tmp_path / "fresh_logs" / f"{i}.{stream}"
            ).read_text(), (i, stream)
    assert (tmp_path / "forked_logs" / "1.err").read_text().count("\n") == 1  # one line, exit 2
    assert "RuntimeError: a crash on purpose" in (tmp_path / "forked_logs" / "3.err").read_text()
    assert (tmp_path / "forked_logs" / "5.out").read_text() == "before\n"


@pytest.mark.slow
def test_a_rehearsal_stage_dies_with_its_killed_runner_and_the_run_resumes(tmp_path):
    """SIGKILL to the runner alone (not its process group) while its forked GLUE training runs: the
    training dies with it (PR_SET_PDEATHSIG), and the same command then finishes the run: a rehearsed
    BA-LoRA row of the NLU table, recorded as BA-LoRA, and the table."""
    args = ["nlu_table", "--rehearse", "--only", "rte_deberta-v3-base_ba-lora/",
            "--results_dir", str(tmp_path / "results"), "--outputs_dir", str(tmp_path / "outputs")]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [PY, "-m", "balora.repro.run", *args, "--no-finish"], cwd=REPO, env=env, start_new_session=True,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        # The training: the runner's live child after its started marker, forked (the runner's command
        # line; read once the runner runs, as a process just started still shows the one of its parent).
        marker = (
            tmp_path / "outputs" / "nlu" / "rte_deberta-v3-base_ba-lora" / "seed42" / ".stage_train.started"
        )
        deadline = time.monotonic() + 300
        while not marker.exists() or not (
            stage := [
                pid
                for pid, state in _children(proc.pid).items()
                if state != "Z" and _cmdline(pid) == _cmdline(proc.pid)
            ]
        ):
            assert proc.poll() is None and time.monotonic() < deadline, "no forked stage: " + log.read_text()
            time.sleep(0.02)
        (child,) = stage
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while _state(child) not in ("Z", "X", None):  # zombie, dead or gone
            assert time.monotonic() < deadline, "the stage outlived its runner"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    train = tmp_path / "outputs" / "nlu" / "rte_deberta-v3-base_ba-lora" / "seed42" / "train"
    assert not (train / "metrics.json").exists(), log.read_text()  # killed mid-stage
    # Resumed with the user's OMP_NUM_THREADS = 2: BLAS starts no thread pool in the runner, which still forks.
    resumed = runner(*args, env={"OMP_NUM_THREADS": "2"})
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "    train: ok (" in resumed.stdout and "forked from the preloaded runner)" in resumed.stdout
    results = tmp_path / "results" / "nlu" / "rte_deberta-v3-base_ba-lora" / "seed42"
    assert (results / "DONE").is_file()
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["trained"] == "ba-lora" and metrics["method"] == "ba-lora"
    assert (tmp_path / "results" / "tables" / "nlu.md").exists()


def test_only_plain_python_commands_of_this_interpreter_fork_and_only_from_one_thread(tmp_path):
    """Launchers, `python -c`, other flags or interpreters run as subprocesses; eval/*.py runs as the
    module it re-executes; with a second thread in this process nothing forks."""
    from balora.repro import stage_runner as S

    cwd = str(REPO)
    for argv in (
        [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "train_nlg.py"],
        ["deepspeed", "--include", "localhost:0", "train_nlg.py"],
        [PY, "-c", "print(1)"],
        [PY, "-u", "finetune_glue.py"],
        ["/usr/bin/env", "python", "finetune_glue.py"],
    ):
        assert S.entry_of(argv, cwd) is None, argv
    assert S.entry_of([PY, "finetune_glue.py", "--seed", "1"], cwd) == S.Entry(
        None, "finetune_glue.py", ["--seed", "1"], cwd
    )
    assert S.entry_of([PY, "eval/math.py", "--limit", "2"], cwd) == S.Entry(
        "balora.cli.eval_math", None, ["--limit", "2"], None
    )
    assert S.entry_of([PY, "-m", "balora.cli.aggregate", "nlu"], cwd) == S.Entry(
        "balora.cli.aggregate", None, ["nlu"], cwd
    )
    script = tmp_path / "exit4.py"
    script.write_text("import sys; sys.exit(4)\n")
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not S._fork_is_safe()
        assert S.run([PY, str(script)], dict(os.environ), cwd) == (4, False)
    finally:
        stop.set()
        thread.join()


def test_rehearsal_eval_flags_fit_each_evaluator(tmp_path, monkeypatch):
    """The rehearsal's generation flags go to the generating evaluators only: eval/gsm8k_nll.py, which scores
    solutions and generates nothing, refused --max_new_tokens (the tiny and mini studies failed under
    --rehearse)."""
    from balora.repro import run as R

    monkeypatch.chdir(REPO)
    for study in ("tiny", "mini"):
        opts = R.Options(
            study=study, rehearse=True, results_dir=str(tmp_path / "r"), outputs_dir=str(tmp_path / "o")
        )
        stages = [s for run in R.make_plan(opts) for s in run.stages if s.name.startswith("eval_")]
        nll = [s.argv for s in stages if s.name == "eval_gsm8k_nll"]
        assert nll and all("--max_new_tokens" not in argv and "--limit" in argv for argv in nll), study
    mini = [s.argv for run in R.make_plan(opts) for s in run.stages if s.name == "eval_gsm8k"]
    assert mini and all("--max_new_tokens" in argv for argv in mini)
