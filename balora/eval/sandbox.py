"""Execute model-written programs in an OS-level sandbox and grade them with trusted checks.

Processes of one run (full isolation: running as root, the normal case on our machines and CI):

    evaluator (host)
      └─ launcher      python -I -S -c ... sandbox_checker.launcher_main(CONFIG, REPORT_FD)
           │           (new mount, network, PID, IPC, UTS namespaces)
           └─ checker  PID 1 of the new PID namespace; root inside the namespaces; trusted code only
                └─ worker  a fresh interpreter exec'd with only the program: python -I -S, a uid of
                           its own, rlimits, a seccomp filter, the run's memory cgroup

* The program never holds its tests. The worker is exec'd (not merely forked) by the checker with the
  program and nothing else: the task's tests, expected outputs and reference solution stay in the
  checker (root, another uid, not dumpable) and are in none of the worker's memory, environment,
  argv, files or descriptors (fds 0-2 and its two pipes). The launcher deletes the run's config file
  as soon as it has read it.
* The worker sees a private root: an empty read-only tmpfs holding only the Python runtime and the
  system libraries (/usr/lib, /usr/lib64; read-only binds), /dev/{null,zero,random,urandom}, a
  fresh /proc of its PID namespace, and /work (a tmpfs capped in size and inodes, its cwd, HOME and
  TMPDIR; /tmp points there). Host files (/etc, /root, the project, other samples) are not in its view.
* No network: a new network namespace with only a down loopback. Abstract Unix sockets belong to
  the network namespace and path-bound Unix sockets of the host are not in the view, so neither TCP
  nor Unix-domain sockets reach the host. SysV IPC and POSIX message queues are private too.
* Each run gets a uid of its own (drawn from a 2^28 range, distinct among concurrent runs of this
  process), so RLIMIT_NPROC counts that sample's processes only: a fork bomb exhausts its own
  limit and no one else's. The worker cannot signal, trace or read the checker (root).
* The verdict: with `Checks`, the checker runs the task's tests (trusted code from the data set,
  never the model's) and calls the program's functions through proxies over a pipe. Arguments and
  return values cross as plain data (None, bool, int, float, complex, str, bytes, list, tuple,
  dict, set; recursively; a subclass's instance as its base type's data, so an overridden `__eq__`
  never reaches the checks); anything else raises `NotPlainData` in the checks. The
  run passes only when the checks ran to their end without an exception; the checker writes that
  verdict to a file descriptor the worker never holds. Exit status, output and markers printed by
  the program play no part in it, so `os._exit(0)`, `SystemExit(0)`, `atexit` tricks and objects
  whose `__eq__` is always True all fail.

Memory: one bound per sample (`SandboxLimits.memory_mb`), by mechanism —

    mechanism                       where a memory cgroup applies     without one
    anonymous memory, stacks        cgroup (all processes together)   RLIMIT_AS per process (x max_processes)
    SysV shared memory              cgroup + IPC namespace caps       IPC namespace: shmall = shmmax = memory_mb
    /work files (tmpfs)             cgroup + tmpfs size               tmpfs size= (workdir_mb)
    inodes, dentries (kernel slab)  cgroup + tmpfs nr_inodes          tmpfs nr_inodes= (workdir_inodes)
    memfd_create, memfd_secret      denied (seccomp, x86_64/aarch64)  denied
    POSIX shm (/dev/shm)            not in the view                   not in the view

A memory cgroup applies where this process may create one (root; cgroup v1 `memory` hierarchy, or
cgroup v2 with `memory` in the subtree_control of this process's cgroup, or the directory named by
$BALORA_SANDBOX_CGROUP): the worker joins the run's own cgroup before it execs, and the kernel
charges it everything the worker's processes allocate, kernel memory (slab, page tables, socket
buffers in v2) and shared memory included; past `memory_mb` the OOM killer ends the program. The
isolation record says which applied (`"memory": "cgroup"` or `"rlimits"`). The cgroup also lets the
evaluator kill every process of a run, daemons included, in every mode.

Weaker levels, reported in every result under `isolation` and refused by the evaluators unless the
user accepts them (`--allow_weak_isolation`): root without namespaces (no private root, no netns:
sockets disabled in-process; no IPC caps; the worker still gets its own uid when it can reach the
interpreter, else runs as root and can read the checker's memory); not root (an unprivileged user
namespace for the network when the kernel allows it, else sockets disabled in-process; same uid as
the checker, which is made non-dumpable, as is the launcher).

The sandbox's own processes run balora/eval/sandbox_checker.py (launcher, checker) and
balora/eval/sandbox_worker.py (the worker; plain data across the pipe); both import only the
standard library.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from balora.eval.sandbox_checker import ENV_PASSTHROUGH, WORKDIR, clean_env
from balora.eval.sandbox_worker import (
    MAX_MESSAGE_BYTES,
    MAX_NESTING,
    NotPlainData,
    decode_plain,
    encode_plain,
)

__all__ = [
    "ENV_PASSTHROUGH",
    "FULL_ISOLATION",
    "MAX_MESSAGE_BYTES",
    "MAX_NESTING",
    "WORKDIR",
    "Checks",
    "ExecResult",
    "NotPlainData",
    "SandboxLimits",
    "SandboxSetupError",
    "WeakIsolationError",
    "decode_plain",
    "encode_plain",
    "probe_isolation",
    "require_isolation",
    "run_program",
    "run_programs",
]

# Each run's program gets its own uid from this range (unused by any distribution's users).
UID_BASE = 0x10000000
UID_RANGE = 0x10000000
MAX_CAPTURED_OUTPUT = 64 * 1024  # bytes of stdout/stderr kept in a result
FULL_ISOLATION = {
    "network": "netns",
    "user": "uid-per-run",
    "filesystem": "private-root",
    "pid_namespace": True,
    "verdict": "checker-process",
}
CGROUP_ENV = "BALORA_SANDBOX_CGROUP"  # a delegated cgroup directory to create the runs' cgroups in
# The launcher: imports the checker module from this checkout, then forgets the path (so the checks'
# own imports cannot resolve to the project's modules).
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LAUNCHER = (
    f"import sys; sys.path.insert(0, {_REPO!r}); from balora.eval import sandbox_checker; del sys.path[0]; "
    "sandbox_checker.launcher_main(sys.argv[1], int(sys.argv[2]))"
)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program (all enforced by the kernel, not by Python code).

    Attributes:
        timeout_s: wall-clock limit; the whole process tree is killed when it expires.
        cpu_s: CPU-time limit of the program (RLIMIT_CPU, SIGXCPU then SIGKILL).
        memory_mb: the sample's memory bound: its memory cgroup where one applies (all its processes,
            shared and kernel memory included), RLIMIT_AS per process (a 10 GB allocation fails with
            MemoryError), and the SysV shared-memory cap of its IPC namespace.
        file_size_mb: largest file the program may write (RLIMIT_FSIZE), also caps stdout/stderr.
        max_processes: RLIMIT_NPROC of the run's own uid (stops fork bombs, per run).
        workdir_mb: size of the tmpfs working directory (full isolation).
        max_open_files: RLIMIT_NOFILE.
        workdir_inodes: inodes of the tmpfs working directory (files, directories, links; each costs
            kernel memory).
    """

    timeout_s: float = 10.0
    cpu_s: float = 10.0
    memory_mb: int = 2048
    file_size_mb: int = 16
    max_processes: int = 32
    workdir_mb: int = 64
    max_open_files: int = 128
    workdir_inodes: int = 16384


@dataclass(frozen=True)
class Checks:
    """Trusted checks of a program, run by the checker process (never by the program).

    Attributes:
        setup: trusted code run first in the checks' namespace (imports, helpers the tests use).
        code: the tests; the program passes when this runs to its end without raising.
        candidates: names bound, after `setup`, to proxies that call the program's global of that
            name with plain-data arguments and return its plain-data result. `proxy.is_not_none(*args)`
            calls the function and returns only whether its result is not None (for tasks whose
            result is an object, e.g. a `re.Match`, and only its presence is checked).
        data: plain data (e.g. test inputs) bound to `DATA` in the checks' namespace.
    """

    setup: str
    code: str
    candidates: tuple[str, ...]
    data: object = None


@dataclass
class ExecResult:
    """Outcome of one program.

    status: "passed" (the checks ran to their end), "failed" or "timeout" when checks were given;
    without checks "completed" (exit status 0), "failed" or "timeout". `reason` says why a run did
    not pass (from the checker, never from the program's output). `peak_memory_mb`: the most memory
    the run's cgroup was charged (None without a memory cgroup).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    isolation: dict = field(default_factory=dict)
    reason: str = ""
    uid: int | None = None
    peak_memory_mb: float | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class SandboxSetupError(RuntimeError):
    """The sandbox itself could not be set up (reported by the launcher, never by the program)."""


class WeakIsolationError(RuntimeError):
    """This machine cannot provide full isolation and the caller did not accept weaker isolation."""


def _clean_env() -> dict[str, str]:
    return clean_env()


def _read_capped(path: str) -> str:
    with open(path, "rb") as handle:
        data = handle.read(MAX_CAPTURED_OUTPUT + 1)
    text = data[:MAX_CAPTURED_OUTPUT].decode("utf-8", errors="replace")
    return text + ("\n...[truncated]" if len(data) > MAX_CAPTURED_OUTPUT else "")


_uids_in_use: set[int] = set()
_uids_lock = threading.Lock()


def _allocate_uid() -> int:
    with _uids_lock:
        while True:
            uid = UID_BASE + random.SystemRandom().randrange(UID_RANGE)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int) -> None:
    with _uids_lock:
        _uids_in_use.discard(uid)


def _read_report(handle) -> dict:
    """The launcher's and checker's JSON lines, from the report file (a file without a name, which
    only the launcher and the checker hold: the program cannot open it by a path)."""
    handle.seek(0)
    report: dict = {}
    for line in handle.read().decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short when the run was killed at the wall clock
            continue
        if isinstance(entry, dict):
            report.update(entry)
    return report


# --- memory cgroups ------------------------------------------------------------------------------

_UNSET = object()
_cgroup_parent = _UNSET


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _find_memory_cgroup() -> tuple[str, str] | None:
    """(version, directory) of a memory cgroup this process may create the runs' cgroups in, or None."""
    if os.geteuid() != 0:
        return None
    named = os.environ.get(CGROUP_ENV)
    if named:
        if not os.path.isfile(os.path.join(named, "cgroup.procs")):
            raise ValueError(
                f"${CGROUP_ENV}={named} is not a cgroup directory: name a delegated cgroup or unset it"
            )
        version = "v2" if os.path.exists(os.path.join(named, "cgroup.subtree_control")) else "v1"
        return version, named
    try:
        with open("/proc/self/cgroup") as handle:
            memberships = [line.split(":", 2) for line in handle.read().splitlines() if line.count(":") >= 2]
        with open("/proc/self/mountinfo") as handle:
            mounts = handle.read().splitlines()
    except OSError:
        return None
    for line in mounts:
        before, _, after = line.partition(" - ")
        fields, kinds = before.split(), after.split()
        if len(fields) < 5 or len(kinds) < 3:
            continue
        fstype, options = kinds[0], kinds[2].split(",")
        if fstype == "cgroup2":
            version, path = "v2", next((m[2] for m in memberships if m[0] == "0" and m[1] == ""), None)
        elif fstype == "cgroup" and "memory" in options:
            version, path = "v1", next((m[2] for m in memberships if "memory" in m[1].split(",")), None)
        else:
            continue
        if path is None:
            continue
        mount_root = fields[3]
        if mount_root != "/" and path.startswith(mount_root):
            path = path[len(mount_root) :]
        directory = os.path.normpath(fields[4] + "/" + path)
        if version == "v2":
            try:
                with open(os.path.join(directory, "cgroup.subtree_control")) as handle:
                    if "memory" not in handle.read().split():
                        continue
            except OSError:
                continue
        probe = os.path.join(directory, f"balora-probe-{os.getpid()}")
        try:
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError:
            continue
        return version, directory
    return None


class _MemoryCgroup:
    """One run's memory cgroup: created before the launcher starts, removed (its processes killed) after."""

    def __init__(self, version: str, parent: str, name: str, limit_bytes: int):
        self.version, self.path = version, os.path.join(parent, name)
        os.mkdir(self.path)
        try:
            if version == "v2":
                _write(self.file("memory.max"), str(limit_bytes))
                for option, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if os.path.exists(self.file(option)):
                        _write(self.file(option), value)
            else:
                _write(self.file("memory.limit_in_bytes"), str(limit_bytes))
                if os.path.exists(self.file("memory.memsw.limit_in_bytes")):
                    _write(self.file("memory.memsw.limit_in_bytes"), str(limit_bytes))
        except OSError:
            self.remove()
            raise

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def peak_bytes(self) -> int | None:
        name = "memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes"
        try:
            with open(self.file(name)) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        try:
            with open(self.file(name)) as handle:
                for line in handle.read().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> None:
        """Kill whatever is left in the cgroup (daemons too), then remove it."""
        for _ in range(200):
            try:
                with open(self.file("cgroup.procs")) as handle:
                    pids = [int(p) for p in handle.read().split()]
            except OSError:
                pids = []
            if pids and os.path.exists(self.file("cgroup.kill")):
                _write(self.file("cgroup.kill"), "1")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:  # processes still exiting
                time.sleep(0.01)


def _memory_cgroup() -> tuple[str, str] | None:
    global _cgroup_parent
    if _cgroup_parent is _UNSET:
        _cgroup_parent = _find_memory_cgroup()
    return _cgroup_parent


# --- running programs ----------------------------------------------------------------------------


def run_program(
    source: str,
    limits: SandboxLimits | None = None,
    stdin: str = "",
    namespaces: bool = True,
    checks: Checks | None = None,
    cgroup: bool = True,
) -> ExecResult:
    """Run one Python program in the sandbox and wait for it.

    Args:
        source: the program (model code; for HumanEval the prompt + completion), without the tests.
        limits: resource limits; defaults to SandboxLimits().
        stdin: text fed to the program's standard input.
        namespaces: False skips the namespaces even as root (only to exercise the fallback in tests).
        checks: the task's tests; with them the status is "passed" only when they ran to their end.
        cgroup: False skips the memory cgroup even where one applies (only to exercise the
            per-mechanism caps alone in tests).

    Returns:
        ExecResult with the status, exit code, captured (capped) output and the isolation used.

    Raises:
        SandboxSetupError: the sandbox could not be set up twice in a row (a property of the machine,
            not of the program: set-up happens before any of its code runs).
    """
    limits = limits or SandboxLimits()
    try:
        return _run_once(source, limits, stdin, namespaces, checks, cgroup)
    except (SandboxSetupError, OSError):
        # A transient shortage (fork or mount refused while other runs hold memory or processes)
        # must not abort a whole evaluation: try once more before reporting the machine broken.
        time.sleep(1.0)
        return _run_once(source, limits, stdin, namespaces, checks, cgroup)


def _run_once(
    source: str, limits: SandboxLimits, stdin: str, namespaces: bool, checks: Checks | None, cgroup: bool
) -> ExecResult:
    outer = tempfile.mkdtemp(prefix="balora-sandbox-")
    uid = _allocate_uid()
    memory = None
    try:
        # Traversable, not listable: without namespaces the program's work dir is outer/work; with
        # them the program never sees this directory.
        os.chmod(outer, 0o711)
        os.mkdir(os.path.join(outer, "root"))
        with open(os.path.join(outer, "stdin.txt"), "w") as handle:
            handle.write(stdin)
        namespaces = namespaces and _namespaces_unusable is None
        parent = _memory_cgroup() if cgroup else None
        if parent is not None:
            memory = _MemoryCgroup(*parent, os.path.basename(outer), limits.memory_mb * 1024 * 1024)
        config = {
            "outer": outer,
            "limits": asdict(limits),
            "namespaces": namespaces,
            "uid": uid,
            "source": source,
            "checks": None,
            "memory": "cgroup" if memory else "rlimits",
            "cgroup_procs": memory.file("cgroup.procs") if memory else None,
        }
        if checks is not None:
            config["checks"] = {
                "setup": checks.setup,
                "code": checks.code,
                "candidates": list(checks.candidates),
                "data": encode_plain(checks.data),
            }
        config_path = os.path.join(outer, "config.json")
        # Readable by root only; the launcher deletes it once read.
        with open(os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            json.dump(config, handle)
        start = time.monotonic()
        with (
            open(os.path.join(outer, "stdout.txt"), "wb") as out,
            open(os.path.join(outer, "stderr.txt"), "wb") as err,
            open(os.path.join(outer, "stdin.txt"), "rb") as inp,
            tempfile.TemporaryFile(dir=outer) as report_file,
        ):
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, config_path, str(report_file.fileno())],
                stdin=inp,
                stdout=out,
                stderr=err,
                cwd=outer,
                env=clean_env(),
                start_new_session=True,  # own session and process group: killpg reaches all of it
                pass_fds=(report_file.fileno(),),
            )
            try:
                # Start-up of the launcher is not the program's time: allow one extra second.
                timed_out = not _wait_for_exit(proc, limits.timeout_s + 1.0)
            finally:
                _kill_group(proc.pid)
                proc.wait()
            report = _read_report(report_file)
        wall = time.monotonic() - start
        if "setup_error" in report:
            raise SandboxSetupError(
                f"The sandbox could not be set up: {report['setup_error']}. "
                "Run as root on a kernel that allows mount/PID/network namespaces, "
                "or accept weaker isolation (--allow_weak_isolation)."
            )
        oom = memory.oom_kills() if memory else 0
        peak = memory.peak_bytes() if memory else None
        status, reason = _status(report, timed_out, limits)
        if oom and status != "passed":
            reason = f"memory limit of {limits.memory_mb} MiB: the kernel killed a process of the program; {reason}"
        return ExecResult(
            status=status,
            returncode=report.get("exit_status", proc.returncode),
            stdout=_read_capped(os.path.join(outer, "stdout.txt")),
            stderr=_read_capped(os.path.join(outer, "stderr.txt")),
            wall_s=round(wall, 4),
            isolation=report.get("isolation", {}),
            reason=reason,
            uid=uid,
            peak_memory_mb=None if peak is None else round(peak / 2**20, 1),
        )
    finally:
        if memory is not None:
            memory.remove()
        shutil.rmtree(outer, ignore_errors=True)
        _release_uid(uid)


def _status(report: dict, timed_out: bool, limits: SandboxLimits) -> tuple[str, str]:
    """(status, reason) of a run from the report the launcher and the checker wrote."""
    verdict = report.get("verdict")
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.timeout_s} s"
    if report.get("cpu_limit"):
        return "timeout", f"CPU limit of {limits.cpu_s} s"
    if verdict in ("passed", "completed"):
        return verdict, report.get("reason", "")
    if verdict is None and "checker_ended" in report:
        return "failed", f"the checker ended without a verdict ({report['checker_ended']})"
    return "failed", report.get("reason", "") or "the checker reported no verdict"


def _wait_for_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Whether the process ended within `timeout` seconds. Woken by the kernel the moment it exits (a
    pidfd), where Popen.wait(timeout) polls with sleeps of up to 50 ms."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # before Linux 5.3 / Python 3.9
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        import select

        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if poller.poll(remaining * 1000):
                return True
    finally:
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_programs(
    sources: list[str],
    limits: SandboxLimits | None = None,
    max_workers: int | None = None,
    progress: bool = False,
    checks: list[Checks | None] | None = None,
) -> list[ExecResult]:
    """Run many programs concurrently (a small thread pool of sandboxed subprocesses), in order.

    Args:
        sources: the programs.
        limits: limits applied to each program.
        max_workers: concurrent programs; default 2 x CPU cores (programs mostly wait on start-up).
        progress: show a tqdm progress bar.
        checks: one Checks (or None) per program.
    """
    max_workers = max_workers or max(1, 2 * (os.cpu_count() or 1))
    checks = checks if checks is not None else [None] * len(sources)
    if len(checks) != len(sources):
        raise ValueError(f"run_programs: {len(sources)} programs but {len(checks)} checks")
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        iterator = pool.map(
            lambda pair: run_program(pair[0], limits, checks=pair[1]), zip(sources, checks, strict=True)
        )
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(sources), desc="sandbox", unit="prog")
        return list(iterator)


# Set when namespaces were granted but the private root could not be built (e.g. a container that
# refuses mounts) and the caller accepted weaker isolation: later runs skip the namespaces.
_namespaces_unusable: str | None = None


def probe_isolation(namespaces: bool = True) -> dict:
    """The isolation level this machine gives (runs one empty program)."""
    return run_program("pass\n", SandboxLimits(timeout_s=10, cpu_s=10), namespaces=namespaces).isolation


def require_isolation(allow_weak: bool, namespaces: bool = True) -> dict:
    """Probe the isolation level; raise WeakIsolationError when it is not full and not accepted.

    Returns:
        The isolation dict (recorded with every result).
    """
    global _namespaces_unusable
    try:
        isolation = probe_isolation(namespaces)
    except SandboxSetupError as err:
        if not allow_weak:
            raise WeakIsolationError(
                f"{err} Full isolation is not available here; pass --allow_weak_isolation "
                "to run with the weaker level (recorded in every result)."
            ) from err
        _namespaces_unusable = str(err)
        isolation = probe_isolation(namespaces=False)
    missing = {k: v for k, v in FULL_ISOLATION.items() if isolation.get(k) != v}
    if missing and not allow_weak:
        raise WeakIsolationError(
            f"This machine cannot give model-written code full isolation: got {isolation}, full is "
            f"{FULL_ISOLATION}. Full isolation needs root and a kernel that allows mount, PID and network "
            "namespaces (in a container: --privileged or CAP_SYS_ADMIN). To run anyway with the weaker "
            "level (recorded in every result), pass --allow_weak_isolation."
        )
    return isolation
