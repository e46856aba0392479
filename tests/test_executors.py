"""balora/repro/executors.py: runs as submitit jobs (real local subprocess jobs), their records in the run
folder, the skip of queued / running runs, the sbatch script of a paper run, the launch prefix, bad input.

The SLURM path runs against stand-in `sbatch`, `srun` and `sacct` scripts on PATH (real subprocesses
that answer as SLURM does), since no cluster is reachable here.
"""

import os
import sys
import time
from functools import partial
from pathlib import Path

import cloudpickle
import pytest

from balora.repro.executors import (
    ExecutorError,
    Resources,
    RunJob,
    job_state,
    launch_prefix,
    read_records,
    sbatch_script,
    submit_runs,
)

# The job processes unpickle these functions without this test module on their path.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def write_after_release(run_dir: Path, release: Path, text: str) -> str:
    """A run's chain in miniature: waits for `release`, then writes into its run folder."""
    deadline = time.time() + 120
    while not release.exists():
        if time.time() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.1)
    (run_dir / "result.txt").write_text(f"{text} pid={os.getpid()}\n")
    print(f"chain of {text} done")
    return text


def fail_chain() -> None:
    raise RuntimeError("stage train failed")


def _wait_for(run_dir: Path, states: tuple[str, ...], timeout: float = 180.0) -> str:
    deadline = time.time() + timeout
    while True:
        state = job_state(read_records(run_dir)[-1])
        if state in states or time.time() > deadline:
            return state
        time.sleep(0.5)


def test_local_jobs_run_are_recorded_and_not_resubmitted_while_running(tmp_path):
    release = tmp_path / "release"
    jobs = [
        RunJob(
            f"run{k}",
            tmp_path / "runs" / f"run{k}" / "seed42",
            Resources(time_minutes=5, cpus_per_task=1),
            partial(write_after_release, tmp_path / "runs" / f"run{k}" / "seed42", release, f"run{k}"),
        )
        for k in (1, 2)
    ]
    options = {"log_dir": str(tmp_path / "logs")}
    first = submit_runs(jobs, "submitit-local", options)
    assert [r["run_id"] for r in first] == ["run1", "run2"]
    assert all(r["submitted"] and r["state"] == "SUBMITTED" for r in first)
    assert first[0]["job_id"] != first[1]["job_id"]
    for job, record in zip(jobs, first, strict=True):
        (saved,) = read_records(job.run_dir)
        assert saved["job_id"] == record["job_id"] and saved["executor"] == "submitit-local"
        assert saved["resources"]["time_minutes"] == 5
        assert os.readlink(job.run_dir / f"job-{record['job_id']}.out") == record["stdout"]

    # Submitted again while they wait: both skipped, nothing new recorded.
    again = submit_runs(jobs, "submitit-local", options)
    assert [(r["submitted"], r["state"]) for r in again] == [(False, "RUNNING")] * 2
    assert [r["job_id"] for r in again] == [r["job_id"] for r in first]
    assert all(len(read_records(job.run_dir)) == 1 for job in jobs)

    release.touch()
    for job, record in zip(jobs, first, strict=True):
        assert _wait_for(job.run_dir, ("COMPLETED", "FAILED", "INTERRUPTED")) == "COMPLETED"
        written = (job.run_dir / "result.txt").read_text()
        assert written.startswith(f"{job.run_id} pid=") and written != f"{job.run_id} pid={os.getpid()}\n"
        log = (job.run_dir / f"job-{record['job_id']}.out").read_text()
        assert f"chain of {job.run_id} done" in log


def test_a_failed_job_is_submitted_again(tmp_path):
    run_dir = tmp_path / "run" / "seed42"
    job = RunJob("failing", run_dir, Resources(time_minutes=5, cpus_per_task=1), fail_chain)
    options = {"log_dir": str(tmp_path / "logs")}
    (first,) = submit_runs([job], "submitit-local", options)
    assert _wait_for(run_dir, ("COMPLETED", "FAILED", "INTERRUPTED")) == "FAILED"
    assert "stage train failed" in Path(first["stderr"]).read_text()
    (second,) = submit_runs([job], "submitit-local", options)
    assert second["submitted"] and second["job_id"] != first["job_id"]
    assert [r["job_id"] for r in read_records(run_dir)] == [first["job_id"], second["job_id"]]
    assert _wait_for(run_dir, ("COMPLETED", "FAILED", "INTERRUPTED")) == "FAILED"


# --- the SLURM side: the batch script of a paper run, the launch, stand-in SLURM commands --------------


def _sbatch_lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if line.startswith("#SBATCH")}


def test_sbatch_script_of_a_paper_run_on_one_node(tmp_path):
    paper = Resources(
        gpus_per_node=8, nodes=1, time_minutes=720, partition="gpu", cpus_per_task=32, mem_gb=400
    )
    text = sbatch_script(paper, {"log_dir": str(tmp_path / "logs"), "account": "proj"})
    logs = tmp_path.resolve() / "logs"
    assert {
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --time=720",
        "#SBATCH --partition=gpu",
        "#SBATCH --mem=400GB",
        "#SBATCH --account=proj",
        f"#SBATCH --output={logs}/%j/%j_0_log.out",
        f"#SBATCH --error={logs}/%j/%j_0_log.err",
    } <= _sbatch_lines(text)
    assert not any(line.startswith("#SBATCH --array") for line in text.splitlines())
    # The chain runs once in the batch step: the python command is not wrapped in srun.
    command = text.split("# command", 1)[1]
    assert "srun" not in command and f"-u -m submitit.core._submit {logs}/%j" in command
    # Three such runs are one array, at most 32 at a time by default.
    array = sbatch_script(paper, {"log_dir": str(tmp_path / "logs")}, count=3)
    assert "#SBATCH --array=0-2%3" in _sbatch_lines(array)
    assert f"#SBATCH --output={logs}/%A_%a/%A_%a_0_log.out" in _sbatch_lines(array)


def test_sixteen_gpus_are_two_nodes_with_a_multi_node_launch(tmp_path):
    run = Resources(gpus_per_node=8, nodes=2, time_minutes=1440, partition="gpu")
    lines = _sbatch_lines(sbatch_script(run, {"log_dir": str(tmp_path)}))
    assert {"#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=1"} <= lines
    env = {"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456", "SLURM_NODEID": "0"}
    prefix = launch_prefix(run, env)
    assert prefix[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert prefix[4:6] == ["bash", "-c"] and prefix[7] == "launch"
    script = prefix[6]
    assert "-m torch.distributed.run --nnodes 2 --nproc_per_node 8" in script
    assert '--node_rank "$SLURM_NODEID"' in script  # expanded on each node by its own srun task
    assert "--master_addr gpu07 --master_port 23456" in script and script.endswith('"$@"')
    with pytest.raises(ExecutorError, match="runs inside a SLURM job"):
        launch_prefix(run, {})
    with pytest.raises(ExecutorError, match="needs 2 nodes; SLURM_JOB_NODELIST=gpu07 has 1"):
        launch_prefix(run, {"SLURM_JOB_NODELIST": "gpu07"})


def test_launch_prefix_on_one_machine():
    assert launch_prefix(Resources(), {}) == []
    assert launch_prefix(Resources(gpus_per_node=8), {"SLURM_JOB_ID": "42"}) == [
        "deepspeed",
        "--num_gpus",
        "8",
        "--master_port",
        "20042",
    ]
    assert launch_prefix(Resources(gpus_per_node=2), {})[-1] == "29500"


def _fake_slurm(bin_dir: Path, sbatch: str, sacct: str | None) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    scripts = {"sbatch": sbatch, "srun": "exit 1"}
    if sacct is not None:
        scripts["sacct"] = sacct
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


def test_submission_to_slurm_records_arrays_and_skips_queued_runs(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    # sbatch answers as SLURM does; sacct reports every array task of 7311 as pending.
    _fake_slurm(
        bin_dir,
        sbatch=f'echo "$@" >> {tmp_path}/sbatch.calls; echo "Submitted batch job 7311"',
        sacct='printf "JobID|State|NodeList\\n7311_[0-1]|PENDING|None assigned\\n"',
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    jobs = [
        RunJob(f"r{k}", tmp_path / f"r{k}", Resources(gpus_per_node=8, partition="gpu"), fail_chain)
        for k in (0, 1)
    ]
    records = submit_runs(jobs, "slurm", {"log_dir": str(tmp_path / "logs")})
    assert [r["job_id"] for r in records] == ["7311_0", "7311_1"]  # one array for equal resources
    assert len((tmp_path / "sbatch.calls").read_text().splitlines()) == 1
    (saved,) = read_records(tmp_path / "r1")
    assert saved["stdout"].endswith("logs/7311_1/7311_1_0_log.out")
    batch_file = Path(saved["folder"].replace("%j", "7311")) / "7311_submission.sh"
    assert "#SBATCH --array=0-1%2" in batch_file.read_text()
    again = submit_runs(jobs, "slurm", {"log_dir": str(tmp_path / "logs")})
    assert [(r["submitted"], r["state"]) for r in again] == [(False, "PENDING")] * 2
    assert len((tmp_path / "sbatch.calls").read_text().splitlines()) == 1


def test_a_job_whose_state_cannot_be_read_is_reported_not_resubmitted(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    _fake_slurm(bin_dir, sbatch='echo "Submitted batch job 8422"', sacct=None)  # no sacct
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    job = RunJob("r", tmp_path / "r", Resources(), fail_chain)
    (first,) = submit_runs([job], "slurm", {"log_dir": str(tmp_path / "logs")})
    assert first["job_id"] == "8422"
    (again,) = submit_runs([job], "slurm", {"log_dir": str(tmp_path / "logs")})
    assert not again["submitted"] and again["state"] == "UNKNOWN"
    assert "cannot be read (no `sacct` on PATH); not resubmitted" in again["message"]
    assert len(read_records(tmp_path / "r")) == 1


def test_a_refused_partition_is_one_line_and_records_nothing(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    _fake_slurm(
        bin_dir,
        sbatch='echo "sbatch: error: invalid partition specified: nope" >&2\n'
        'echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2\nexit 1',
        sacct=None,
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    job = RunJob(
        "llama2-7b_ba-lora_metamath/seed42", tmp_path / "run", Resources(gpus_per_node=8), fail_chain
    )
    with pytest.raises(ExecutorError) as err:
        submit_runs([job], "slurm", {"log_dir": str(tmp_path / "logs"), "partition": "nope"})
    assert str(err.value) == (
        "sbatch refused the submission of llama2-7b_ba-lora_metamath/seed42: "
        "sbatch: error: invalid partition specified: nope"
    )
    assert not (tmp_path / "run" / "jobs.json").exists()
    assert [p for p in (tmp_path / "logs").iterdir() if p.is_file()] == []  # no pickle or batch file left


def test_bad_input_is_one_line(tmp_path, monkeypatch):
    job = RunJob("r", tmp_path / "r", Resources(), fail_chain)
    cases = [
        ([job], "kubernetes", {}, "unknown executor 'kubernetes'; choose one of slurm, submitit-local"),
        (
            [job],
            "submitit-local",
            {"partition": "gpu"},
            "--partition is a SLURM option; it needs --executor slurm",
        ),
        (
            [job],
            "submitit-local",
            {"queue": "x"},
            "unknown executor option(s) queue; valid: log_dir, partition",
        ),
        (
            [RunJob("r", tmp_path / "r", Resources(partition="gpu"), fail_chain)],
            "submitit-local",
            {},
            "run r: partition 'gpu' is a SLURM option; it needs --executor slurm",
        ),
        (
            [RunJob("r", tmp_path / "r", Resources(gpus_per_node=8, nodes=2), fail_chain)],
            "submitit-local",
            {},
            "run r needs 2 nodes; submitit-local runs on one machine: use --executor slurm",
        ),
        (
            [RunJob("r", tmp_path / "r", Resources(time_minutes=0), fail_chain)],
            "submitit-local",
            {},
            "time_minutes",
        ),
        (
            [job, RunJob("r", tmp_path / "other", Resources(), fail_chain)],
            "submitit-local",
            {},
            "listed twice",
        ),
    ]
    for jobs, executor, options, message in cases:
        with pytest.raises(ExecutorError) as err:
            submit_runs(jobs, executor, options)
        assert message in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(
        ExecutorError, match="no `sbatch` or `srun` on PATH: --executor slurm submits from a SLURM"
    ):
        submit_runs([job], "slurm", {"partition": "gpu"})
    assert not (tmp_path / "r").exists()


def test_a_corrupt_record_file_is_named(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "jobs.json").write_text('[{"job_id": "1"')
    with pytest.raises(ExecutorError, match=r"r/jobs.json is not valid JSON"):
        submit_runs([RunJob("r", tmp_path / "r", Resources(), fail_chain)], "submitit-local", {})
