"""Runs beyond one machine: each run (its chain of stages) submitted as one job through submitit.

Two executors, the same code path (submitit's `SlurmExecutor` and `LocalExecutor`):

* `slurm`: one `sbatch` job per run with the GPUs, nodes, time, CPUs, memory and partition of its
  `Resources`; runs with equal `Resources` go in one job array (`--array=0-N%P`, P = the
  `array_parallelism` option). Needs `sbatch` and `srun` on PATH (a login node); states are read with
  `sacct`.
* `submitit-local`: the same jobs as local subprocesses (submitit's `LocalExecutor`), one machine,
  no arrays. What the tests use.

Every submission is recorded in the run folder: `jobs.json` (one record per job ever submitted for the
run: job id, executor, resources, submitit's folder, log paths, time) and `job-<id>.out` /
`job-<id>.err`, links to the job's stdout and stderr. Submitting again skips a run whose last job is
queued or running, and one whose last job's state cannot be read (it is reported, never resubmitted
blindly); a run whose last job failed, timed out or was cancelled is submitted again. Which runs are
finished is the runner's to decide (their DONE markers): a run it passes is submitted.

Inside a job the chain runs once, on the first node of its allocation (submitit's `use_srun=False`);
a training stage starts its processes with `launch_prefix(resources)`:

* CPU (0 GPUs): no prefix.
* one node: `deepspeed --num_gpus G --master_port P`.
* N > 1 nodes: `srun --nodes=N --ntasks-per-node=1 bash -c 'exec python -m torch.distributed.run
  --nnodes N --nproc_per_node G --node_rank "$SLURM_NODEID" --master_addr <first node> --master_port P
  "$@"'`: one launcher per node, the node rank from each node's SLURM environment, the master the
  first host of SLURM_JOB_NODELIST. The Trainer reads the DeepSpeed config from the run's config.

P is 20000 + (SLURM_JOB_ID mod 10000), so two jobs sharing a node do not share a port. A job that
runs out of time is ended by SLURM (submitit's requeue signal is not used); submitting the run again
starts its chain again, which resumes at its unfinished stage. Jobs start in the directory they were
submitted from (sbatch's default), so the chain's relative paths hold.

Usage (what `python -m balora.repro.run STUDY --executor slurm` does)::

    from functools import partial
    from balora.repro.executors import Resources, RunJob, submit_runs

    jobs = [RunJob("llama2-7b_ba-lora_metamath/seed42", Path("outputs/nlg/.../seed42"),
                   Resources(gpus_per_node=8, time_minutes=720, partition="gpu"),
                   partial(run_chain, "nlg", "llama2-7b_ba-lora_metamath", 42))]
    for record in submit_runs(jobs, "slurm", {"log_dir": "outputs/.submitit", "account": "proj"}):
        print(record["run_id"], record["job_id"], record["state"])

Options (all optional): `log_dir` (submitit's pickles, batch files and logs; default `.submitit`
in the folder the run folders share), and for `slurm` only: `partition` (overrides the runs'),
`account`, `qos`, `constraint`, `array_parallelism` (default 32), `setup` (shell lines run before the
chain, e.g. `module load cuda`). Bad input raises `ExecutorError` with one line naming it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

EXECUTORS = ("slurm", "submitit-local")
JOBS_FILE = "jobs.json"
SLURM_ONLY_OPTIONS = ("partition", "account", "qos", "constraint", "array_parallelism", "setup")
OPTIONS = ("log_dir", *SLURM_ONLY_OPTIONS)
# SLURM states of a job that is still queued or running (sacct's vocabulary, first word).
ACTIVE_STATES = (
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STOPPED",
    "READY",
)


class ExecutorError(ValueError):
    """Bad input or a refused submission; the message is one line that names what to fix."""


@dataclass(frozen=True)
class Resources:
    """What one run needs; from the registry, overridable by flags."""

    gpus_per_node: int = 0
    nodes: int = 1
    time_minutes: int = 60
    partition: str | None = None
    cpus_per_task: int = 4
    mem_gb: int | None = None


@dataclass
class RunJob:
    """One run = its chain of stages, submitted as one job.

    Attributes:
        run_id: the run's id in its study (names the job).
        run_dir: the run folder; jobs.json and the log links are written here.
        resources: what the job asks the scheduler for.
        fn: runs the chain; picklable (a module-level function, or functools.partial of one).
    """

    run_id: str
    run_dir: Path
    resources: Resources
    fn: Callable[[], object]


# --- validation --------------------------------------------------------------------------------------


def _check_resources(job: RunJob, executor: str) -> None:
    r = job.resources
    for name, value, low in (
        ("gpus_per_node", r.gpus_per_node, 0),
        ("nodes", r.nodes, 1),
        ("time_minutes", r.time_minutes, 1),
        ("cpus_per_task", r.cpus_per_task, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ExecutorError(f"run {job.run_id}: {name} must be an integer >= {low}, got {value!r}")
    if r.mem_gb is not None and (not isinstance(r.mem_gb, int) or r.mem_gb < 1):
        raise ExecutorError(f"run {job.run_id}: mem_gb must be a positive integer or None, got {r.mem_gb!r}")
    if r.nodes > 1 and r.gpus_per_node == 0:
        raise ExecutorError(f"run {job.run_id}: {r.nodes} nodes without GPUs; a multi-node launch needs GPUs")
    if executor != "slurm":
        if r.partition is not None:
            raise ExecutorError(
                f"run {job.run_id}: partition {r.partition!r} is a SLURM option; it needs --executor slurm"
            )
        if r.nodes > 1:
            raise ExecutorError(
                f"run {job.run_id} needs {r.nodes} nodes; {executor} runs on one machine: use --executor slurm"
            )


def _check(jobs: list[RunJob], executor: str, options: Mapping[str, object]) -> None:
    if executor not in EXECUTORS:
        raise ExecutorError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ExecutorError(f"unknown executor option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    if executor != "slurm":
        slurm_set = [k for k in SLURM_ONLY_OPTIONS if options.get(k) is not None]
        if slurm_set:
            raise ExecutorError(
                f"--{slurm_set[0]} is a SLURM option; it needs --executor slurm (got --executor {executor})"
            )
    parallelism = options.get("array_parallelism")
    if parallelism is not None and (not isinstance(parallelism, int) or parallelism < 1):
        raise ExecutorError(f"array_parallelism must be a positive integer, got {parallelism!r}")
    setup = options.get("setup")
    if setup is not None and (
        not isinstance(setup, (list, tuple)) or not all(isinstance(s, str) for s in setup)
    ):
        raise ExecutorError(f"setup must be a list of shell lines, got {setup!r}")
    seen_ids, seen_dirs = set(), set()
    for job in jobs:
        _check_resources(job, executor)
        run_dir = Path(job.run_dir).resolve()
        if job.run_id in seen_ids or run_dir in seen_dirs:
            raise ExecutorError(f"run {job.run_id} ({job.run_dir}) is listed twice")
        seen_ids.add(job.run_id)
        seen_dirs.add(run_dir)
    if executor == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise ExecutorError(
                f"no {' or '.join(f'`{t}`' for t in missing)} on PATH: --executor slurm submits from a "
                "SLURM login node"
            )


# --- records in the run folder -----------------------------------------------------------------------


def read_records(run_dir: Path) -> list[dict]:
    """Every job recorded in `run_dir/jobs.json`, oldest first ([] if none).

    Raises:
        ExecutorError: the file is not a JSON list of records.
    """
    path = Path(run_dir) / JOBS_FILE
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ExecutorError(
            f"{path} is not valid JSON ({err.msg}, line {err.lineno}); fix or remove it"
        ) from err
    if not isinstance(records, list) or not all(isinstance(r, dict) and "job_id" in r for r in records):
        raise ExecutorError(f"{path} is not a list of job records; fix or remove it")
    return records


def _append_record(run_dir: Path, record: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / JOBS_FILE
    records = [*read_records(run_dir), record]
    tmp = path.with_name(f".{JOBS_FILE}.tmp")
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(tmp, path)  # a reader sees the old list or the new one, never half of it


def _link_logs(run_dir: Path, job_id: str, stdout: str, stderr: str) -> None:
    for suffix, target in ((".out", stdout), (".err", stderr)):
        link = run_dir / f"job-{job_id}{suffix}"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)  # the file appears when the job starts writing


# --- job states --------------------------------------------------------------------------------------


def _result_outcome(folder: str, job_id: str) -> str | None:
    """'COMPLETED' or 'FAILED' from the result file submitit writes at the end of a job, else None."""
    from submitit.core import utils

    path = utils.JobPaths(folder, job_id=job_id).result_pickle
    if not path.exists():
        return None
    outcome, _ = utils.pickle_load(path)
    return "COMPLETED" if outcome == "success" else "FAILED"


def _local_process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        # A zombie (exited, not yet reaped by the process that submitted it) is not running.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: the signal check is all there is


def job_state(record: Mapping[str, object]) -> str:
    """The current state of a recorded job, in SLURM's vocabulary.

    COMPLETED / FAILED from submitit's result file when the job has ended; otherwise, for a SLURM job,
    sacct's state (PENDING, RUNNING, TIMEOUT, CANCELLED, OUT_OF_MEMORY, ...; UNKNOWN when sacct cannot
    be run or does not know the job); for a local job RUNNING while its process lives, else INTERRUPTED.
    """
    job_id, folder = str(record["job_id"]), str(record["folder"])
    outcome = _result_outcome(folder, job_id)
    if outcome is not None:
        return outcome
    if record.get("executor") == "submitit-local":
        return "RUNNING" if _local_process_alive(int(job_id)) else "INTERRUPTED"
    from submitit.slurm.slurm import SlurmJob

    job = SlurmJob(folder=folder, job_id=job_id)
    state = job.watcher.get_state(job_id, mode="force")
    return (state or "UNKNOWN").split()[0].upper()


# --- submission --------------------------------------------------------------------------------------


def _log_dir(jobs: list[RunJob], options: Mapping[str, object]) -> Path:
    if options.get("log_dir"):
        return Path(str(options["log_dir"])).resolve()
    dirs = [str(Path(job.run_dir).resolve()) for job in jobs]
    common = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else Path(dirs[0]).parent
    if common == Path(common.anchor):
        raise ExecutorError("the run folders share no folder but the root; set the log_dir option")
    return common / ".submitit"


def _slurm_parameters(resources: Resources, options: Mapping[str, object], name: str) -> dict[str, object]:
    """SlurmExecutor parameters (sbatch's names) of one group of runs with the same Resources."""
    params: dict[str, object] = {
        "job_name": name,
        "time": resources.time_minutes,
        "nodes": resources.nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": resources.cpus_per_task,
        "array_parallelism": options.get("array_parallelism") or 32,
        # The chain runs once, in the batch step on the first node; a multi-node training stage starts
        # its own job step with srun (launch_prefix).
        "use_srun": False,
    }
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    if resources.mem_gb is not None:
        params["mem"] = f"{resources.mem_gb}GB"
    partition = options.get("partition") or resources.partition
    if partition:
        params["partition"] = partition
    params.update({k: options[k] for k in ("account", "qos", "constraint") if options.get(k) is not None})
    if options.get("setup"):
        params["setup"] = list(options["setup"])
    return params


def _executor(folder: Path, executor: str, resources: Resources, options: Mapping[str, object], name: str):
    """submitit's SlurmExecutor or LocalExecutor, set up for one group of runs with the same Resources."""
    if executor == "slurm":
        from submitit import SlurmExecutor

        slurm = SlurmExecutor(folder=folder / "%j")
        slurm.update_parameters(**_slurm_parameters(resources, options, name))
        return slurm
    from submitit import LocalExecutor

    local = LocalExecutor(folder=folder / "%j")
    local.update_parameters(
        timeout_min=resources.time_minutes, gpus_per_node=resources.gpus_per_node, tasks_per_node=1, nodes=1
    )
    return local


def sbatch_script(resources: Resources, options: Mapping[str, object] | None = None, count: int = 1) -> str:
    """The batch script submitit writes for `count` runs with these resources (an array if count > 1).

    Written without submitting and without a SLURM installation, from the parameters a submission
    uses; the log paths name `<log_dir>/%j/` (default log_dir: ./.submitit).
    """
    from submitit import SlurmExecutor

    class _Preview(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # SlurmExecutor refuses to start where `srun` is missing
            return 2

    options = dict(options or {})
    _check_resources(RunJob("plan", Path("."), resources, print), "slurm")
    folder = Path(str(options.get("log_dir") or ".submitit")).resolve()
    preview = _Preview(folder=folder / "%j")
    preview.update_parameters(**_slurm_parameters(resources, options, "plan"))
    if count > 1:
        preview.parameters["map_count"] = count  # what SlurmExecutor sets for an array
    return preview._make_submission_file_text(preview._submitit_command_str, "preview")


def _submit_group(group: list[RunJob], executor: str, options: Mapping[str, object], folder: Path) -> list:
    """Submit one group (an array on SLURM); on a refused submission nothing is recorded."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    name = group[0].run_id if len(group) == 1 else f"{group[0].run_id}+{len(group) - 1}"
    submitter = _executor(folder, executor, group[0].resources, options, name)
    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        if len(group) == 1:
            submitted = [submitter.submit(group[0].fn)]
        else:
            with submitter.batch():
                submitted = [submitter.submit(job.fn) for job in group]
    except (FailedJobError, FailedSubmissionError, OSError) as err:
        for leftover in set(folder.iterdir()) - before if folder.is_dir() else ():
            if leftover.is_file() or leftover.is_symlink():
                leftover.unlink()  # the pickles and batch file of the refused submission
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        tool = "sbatch" if executor == "slurm" else "the local executor"
        runs = ", ".join(job.run_id for job in group)
        raise ExecutorError(f"{tool} refused the submission of {runs}: {reason}") from err
    return submitted


def submit_runs(jobs: list[RunJob], executor: str, options: dict) -> list[dict]:
    """Submit each run as one job; record it in its run folder; skip runs already queued or running.

    Args:
        jobs: the runs to submit (each its chain as a picklable callable).
        executor: "slurm" or "submitit-local".
        options: see the module docstring (log_dir; partition, account, qos, constraint,
            array_parallelism, setup for slurm).

    Returns:
        One record per job, in the order given: run_id, job_id, state (SUBMITTED for a new job, else
        the recorded job's state), submitted (bool), stdout, stderr, and message for a skipped run.

    Raises:
        ExecutorError: bad input (checked before anything is submitted) or a refused submission (the
            groups submitted before it are recorded; the refused one is not).
    """
    options = dict(options or {})
    _check(jobs, executor, options)
    out: dict[str, dict] = {}
    pending: list[RunJob] = []
    for job in jobs:
        records = read_records(Path(job.run_dir))
        last = records[-1] if records else None
        if last is None:
            pending.append(job)
            continue
        state = job_state(last)
        if state in ACTIVE_STATES or state == "UNKNOWN":
            message = f"job {last['job_id']} is {state.lower()}"
            if state == "UNKNOWN":
                message = (
                    f"the state of job {last['job_id']} cannot be read ("
                    + ("sacct does not know it" if shutil.which("sacct") else "no `sacct` on PATH")
                    + f"); not resubmitted: check it, then remove its record from {Path(job.run_dir) / JOBS_FILE}"
                )
            out[job.run_id] = {
                "run_id": job.run_id,
                "job_id": last["job_id"],
                "state": state,
                "submitted": False,
                "stdout": last.get("stdout"),
                "stderr": last.get("stderr"),
                "message": message,
            }
        else:
            pending.append(job)
    folder = _log_dir(jobs, options) if pending else None
    groups: dict[Resources, list[RunJob]] = {}
    for job in pending:
        groups.setdefault(job.resources, []).append(job)
    for resources, group in groups.items():
        submitted = _submit_group(group, executor, options, folder)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for job, handle in zip(group, submitted, strict=True):
            paths = handle.paths
            record = {
                "job_id": str(handle.job_id),
                "executor": executor,
                "submitted_at": now,
                "resources": dataclasses.asdict(resources),
                "folder": str(folder / "%j"),
                "stdout": str(paths.stdout),
                "stderr": str(paths.stderr),
            }
            if executor == "slurm":
                record["options"] = {k: v for k, v in options.items() if k != "log_dir" and v is not None}
            run_dir = Path(job.run_dir)
            _append_record(run_dir, record)
            _link_logs(run_dir, record["job_id"], record["stdout"], record["stderr"])
            out[job.run_id] = {
                "run_id": job.run_id,
                "job_id": record["job_id"],
                "state": "SUBMITTED",
                "submitted": True,
                "stdout": record["stdout"],
                "stderr": record["stderr"],
            }
    return [out[job.run_id] for job in jobs]


# --- inside a job ------------------------------------------------------------------------------------


def _master_port(environ: Mapping[str, str]) -> int:
    job_id = environ.get("SLURM_JOB_ID", "")
    if job_id.isdigit():
        return 20000 + int(job_id) % 10000
    return int(environ.get("MASTER_PORT", "29500"))


def launch_prefix(resources: Resources, environ: Mapping[str, str] | None = None) -> list[str]:
    """The command prefix of a training stage inside the job (see the module docstring).

    Args:
        resources: the run's resources.
        environ: the job's environment (default os.environ); a multi-node launch reads
            SLURM_JOB_NODELIST (the master is its first host) and SLURM_JOB_ID (the port).

    Raises:
        ExecutorError: nodes > 1 outside a SLURM allocation of that many nodes, or without GPUs.
    """
    environ = os.environ if environ is None else environ
    if resources.gpus_per_node == 0:
        if resources.nodes > 1:
            raise ExecutorError(f"{resources.nodes} nodes without GPUs; a multi-node launch needs GPUs")
        return []
    port = _master_port(environ)
    if resources.nodes == 1:
        return ["deepspeed", "--num_gpus", str(resources.gpus_per_node), "--master_port", str(port)]
    from submitit.slurm.slurm import _parse_node_list

    nodelist = environ.get("SLURM_JOB_NODELIST", "")
    if not nodelist:
        raise ExecutorError(
            f"a {resources.nodes}-node launch runs inside a SLURM job (SLURM_JOB_NODELIST is not set)"
        )
    hosts = _parse_node_list(nodelist)
    if len(hosts) < resources.nodes:
        raise ExecutorError(
            f"the run needs {resources.nodes} nodes; SLURM_JOB_NODELIST={nodelist} has {len(hosts)}"
        )
    launcher = (
        f"exec {shlex.quote(sys.executable)} -m torch.distributed.run --nnodes {resources.nodes} "
        f'--nproc_per_node {resources.gpus_per_node} --node_rank "$SLURM_NODEID" '
        f'--master_addr {shlex.quote(hosts[0])} --master_port {port} "$@"'
    )
    return [
        "srun",
        f"--nodes={resources.nodes}",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        "bash",
        "-c",
        launcher,
        "launch",  # $0 of the script; the training command follows as "$@"
    ]
