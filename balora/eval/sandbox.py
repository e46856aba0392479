"""Execute model-written programs in an OS-level sandbox and grade them with trusted checks.

Processes of one run (full isolation: running as root, the normal case on our machines and CI):

    evaluator (host)
      └─ launcher      python -I balora/eval/sandbox.py CONFIG   (new mount, network, PID, IPC, UTS namespaces)
           └─ checker  PID 1 of the new PID namespace; root inside the namespaces; trusted code only
                └─ worker  the model's program, as a uid of its own, under rlimits

* The worker sees a private root: an empty read-only tmpfs holding only the Python runtime and the
  system libraries (/usr/lib, /usr/lib64; read-only binds), /dev/{null,zero,random,urandom}, a
  fresh /proc of its PID namespace, and /work (a size-capped tmpfs, its cwd, HOME and TMPDIR; /tmp
  points there). Host files (/etc, /root, the project, other samples) are not in its view.
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

Weaker levels, reported in every result under `isolation` and refused by the evaluators unless the
user accepts them (`--allow_weak_isolation`): root without namespaces (no private root, no netns:
sockets disabled in-process; the worker still gets its own uid when it can reach the interpreter,
else runs as root); not root (an unprivileged user namespace for the network when the kernel allows
it, else sockets disabled in-process; same uid as the checker, which is made non-dumpable).

The child side of this module runs as `python -I balora/eval/sandbox.py CONFIG_JSON` and imports only
the standard library.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Each run's program gets its own uid from this range (unused by any distribution's users).
UID_BASE = 0x10000000
UID_RANGE = 0x10000000
# Variables copied into the program's environment; nothing else (no tokens, keys, proxies) passes.
ENV_PASSTHROUGH = ("LANG", "LC_ALL", "TZ")
MAX_CAPTURED_OUTPUT = 64 * 1024  # bytes of stdout/stderr kept in a result
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # largest argument list / return value crossing the pipe
MAX_NESTING = 100  # deepest plain-data value accepted from the program
WORKDIR = "/work"  # the program's directory inside the private root
FULL_ISOLATION = {
    "network": "netns",
    "user": "uid-per-run",
    "filesystem": "private-root",
    "pid_namespace": True,
    "verdict": "checker-process",
}


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program (all enforced by the kernel, not by Python code).

    Attributes:
        timeout_s: wall-clock limit; the whole process tree is killed when it expires.
        cpu_s: CPU-time limit of the program (RLIMIT_CPU, SIGXCPU then SIGKILL).
        memory_mb: address-space limit per process (RLIMIT_AS); a 10 GB allocation fails with MemoryError.
        file_size_mb: largest file the program may write (RLIMIT_FSIZE), also caps stdout/stderr.
        max_processes: RLIMIT_NPROC of the run's own uid (stops fork bombs, per run).
        workdir_mb: size of the tmpfs working directory (full isolation).
        max_open_files: RLIMIT_NOFILE.
    """

    timeout_s: float = 10.0
    cpu_s: float = 10.0
    memory_mb: int = 2048
    file_size_mb: int = 16
    max_processes: int = 32
    workdir_mb: int = 64
    max_open_files: int = 128


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
    not pass (from the checker, never from the program's output).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    isolation: dict = field(default_factory=dict)
    reason: str = ""
    uid: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class SandboxSetupError(RuntimeError):
    """The sandbox itself could not be set up (reported by the launcher, never by the program)."""


class WeakIsolationError(RuntimeError):
    """This machine cannot provide full isolation and the caller did not accept weaker isolation."""


def _clean_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in ENV_PASSTHROUGH if key in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env.update(
        PATH="/usr/bin:/bin", PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8"
    )
    return env


def _read_capped(path: Path) -> str:
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


def _read_report(path: Path) -> dict:
    """The launcher's and checker's JSON lines (the program never holds this file's descriptor)."""
    report: dict = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut short when the run was killed at the wall clock
                continue
            if isinstance(entry, dict):
                report.update(entry)
    return report


def run_program(
    source: str,
    limits: SandboxLimits | None = None,
    stdin: str = "",
    namespaces: bool = True,
    checks: Checks | None = None,
) -> ExecResult:
    """Run one Python program in the sandbox and wait for it.

    Args:
        source: the program (model code; for HumanEval the prompt + completion), without the tests.
        limits: resource limits; defaults to SandboxLimits().
        stdin: text fed to the program's standard input.
        namespaces: False skips the namespaces even as root (only to exercise the fallback in tests).
        checks: the task's tests; with them the status is "passed" only when they ran to their end.

    Returns:
        ExecResult with the status, exit code, captured (capped) output and the isolation used.

    Raises:
        SandboxSetupError: the sandbox could not be set up twice in a row (a property of the machine,
            not of the program: set-up happens before any of its code runs).
    """
    try:
        return _run_once(source, limits or SandboxLimits(), stdin, namespaces, checks)
    except (SandboxSetupError, OSError):
        # A transient shortage (fork or mount refused while other runs hold memory or processes)
        # must not abort a whole evaluation: try once more before reporting the machine broken.
        time.sleep(1.0)
        return _run_once(source, limits or SandboxLimits(), stdin, namespaces, checks)


def _run_once(
    source: str, limits: SandboxLimits, stdin: str, namespaces: bool, checks: Checks | None
) -> ExecResult:
    outer = Path(tempfile.mkdtemp(prefix="balora-sandbox-"))
    uid = _allocate_uid()
    try:
        # Traversable, not listable: without namespaces the program's work dir is outer/work; with
        # them the program never sees this directory.
        os.chmod(outer, 0o711)
        (outer / "root").mkdir()
        (outer / "stdin.txt").write_text(stdin)
        namespaces = namespaces and _namespaces_unusable is None
        config = {
            "outer": str(outer),
            "limits": asdict(limits),
            "namespaces": namespaces,
            "uid": uid,
            "source": source,
            "checks": None,
        }
        if checks is not None:
            config["checks"] = {
                "setup": checks.setup,
                "code": checks.code,
                "candidates": list(checks.candidates),
                "data": encode_plain(checks.data),
            }
        (outer / "config.json").touch(mode=0o600)
        (outer / "config.json").write_text(json.dumps(config))
        start = time.monotonic()
        with (
            open(outer / "stdout.txt", "wb") as out,
            open(outer / "stderr.txt", "wb") as err,
            open(outer / "stdin.txt", "rb") as inp,
        ):
            proc = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).resolve()), str(outer / "config.json")],
                stdin=inp,
                stdout=out,
                stderr=err,
                cwd=outer,
                env=_clean_env(),
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
        report = _read_report(outer / "report.json")
        if "setup_error" in report:
            raise SandboxSetupError(
                f"The sandbox could not be set up: {report['setup_error']}. "
                "Run as root on a kernel that allows mount/PID/network namespaces, "
                "or accept weaker isolation (--allow_weak_isolation)."
            )
        verdict = report.get("verdict")
        reason = report.get("reason", "")
        if timed_out:
            status, reason = "timeout", f"wall-clock limit of {limits.timeout_s} s"
        elif report.get("cpu_limit"):
            status, reason = "timeout", f"CPU limit of {limits.cpu_s} s"
        elif verdict in ("passed", "completed"):
            status = verdict
        else:
            status = "failed"
            reason = reason or "the checker reported no verdict"
        return ExecResult(
            status=status,
            returncode=report.get("exit_status", proc.returncode),
            stdout=_read_capped(outer / "stdout.txt"),
            stderr=_read_capped(outer / "stderr.txt"),
            wall_s=round(wall, 4),
            isolation=report.get("isolation", {}),
            reason=reason,
            uid=uid,
        )
    finally:
        shutil.rmtree(outer, ignore_errors=True)
        with _uids_lock:
            _uids_in_use.discard(uid)


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
    missing = {k: v for k, v in isolation.items() if FULL_ISOLATION.get(k) != v}
    if missing and not allow_weak:
        raise WeakIsolationError(
            f"This machine cannot give model-written code full isolation: got {isolation}, full is "
            f"{FULL_ISOLATION}. Full isolation needs root and a kernel that allows mount, PID and network "
            "namespaces (in a container: --privileged or CAP_SYS_ADMIN). To run anyway with the weaker "
            "level (recorded in every result), pass --allow_weak_isolation."
        )
    return isolation


# ---------------------------------------------------------------------------------------------
# Plain data across the pipe (both directions). The decoder builds only plain types, so nothing the
# program sends can carry its own methods (__eq__, __hash__, ...) into the checks.
# ---------------------------------------------------------------------------------------------


class NotPlainData(TypeError):
    """A value that is not plain data (None, bool, int, float, complex, str, bytes, list, tuple, dict, set)."""


def encode_plain(value, depth: int = 0):
    """Plain data -> JSON-able tagged form.

    An instance of a subclass of a plain type (collections.Counter, OrderedDict, defaultdict, a
    namedtuple, an IntEnum, numpy.float64) crosses as its base type, read through the base type's own
    methods: only the data crosses, so an overridden `__eq__` or `__iter__` plays no part in the checks.
    MBPP's own reference solutions return Counters that its tests compare with dict literals.
    """
    if depth > MAX_NESTING:
        raise NotPlainData(f"value nested deeper than {MAX_NESTING}")
    if value is None or type(value) is bool:
        return value
    if isinstance(value, int):
        return int.__int__(value)  # an exact int, whatever the subclass defines
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (list, tuple, set)):
        kind = next(k for k in (list, tuple, set) if isinstance(value, k))
        return {"t": kind.__name__, "v": [encode_plain(item, depth + 1) for item in kind.__iter__(value)]}
    if isinstance(value, dict):
        return {
            "t": "dict",
            "v": [[encode_plain(k, depth + 1), encode_plain(v, depth + 1)] for k, v in dict.items(value)],
        }
    if isinstance(value, complex):
        return {"t": "complex", "v": [complex.real.__get__(value), complex.imag.__get__(value)]}
    if isinstance(value, bytes):
        return {"t": "bytes", "v": bytes.hex(value)}
    kind = type(value)
    raise NotPlainData(f"{kind.__module__}.{kind.__qualname__} is not plain data")


def decode_plain(obj, depth: int = 0):
    """Tagged form -> plain data; raises NotPlainData for anything else."""
    if depth > MAX_NESTING:
        raise NotPlainData(f"value nested deeper than {MAX_NESTING}")
    kind = type(obj)
    if obj is None or kind is bool or kind is int or kind is float or kind is str:
        return obj
    if kind is dict and set(obj) == {"t", "v"}:
        tag, items = obj["t"], obj["v"]
        try:
            if tag in ("list", "tuple", "set") and type(items) is list:
                values = [decode_plain(item, depth + 1) for item in items]
                return {"list": list, "tuple": tuple, "set": set}[tag](values)
            if tag == "dict" and type(items) is list:
                return (
                    {
                        decode_plain(pair[0], depth + 1): decode_plain(pair[1], depth + 1)
                        for pair in items
                        if type(pair) is list and len(pair) == 2
                    }
                    if all(type(pair) is list and len(pair) == 2 for pair in items)
                    else _bad(obj)
                )
            if (
                tag == "complex"
                and type(items) is list
                and len(items) == 2
                and all(type(x) in (int, float) for x in items)
            ):
                return complex(items[0], items[1])
            if tag == "bytes" and type(items) is str:
                return bytes.fromhex(items)
        except (TypeError, ValueError) as err:  # unhashable key / element, bad hex
            raise NotPlainData(f"malformed value: {err}") from None
    return _bad(obj)


def _bad(obj):
    raise NotPlainData(f"malformed value of type {type(obj).__name__}")


def _send(fd: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise NotPlainData(f"value of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    data = struct.pack("<Q", len(data)) + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int) -> dict | None:
    header = _read_exact(fd, 8)
    if header is None:
        return None
    (size,) = struct.unpack("<Q", header)
    if size > MAX_MESSAGE_BYTES:
        raise NotPlainData(f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    data = _read_exact(fd, size)
    if data is None:
        return None
    message = json.loads(data)
    if type(message) is not dict:
        raise NotPlainData("malformed message")
    return message


# ---------------------------------------------------------------------------------------------
# Child side: launcher, checker and worker. Runs before any model code.
# ---------------------------------------------------------------------------------------------

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 4, 38
_DEVICES = ("null", "zero", "random", "urandom")


class _SetupError(Exception):
    pass


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    ctypes, libc = _libc()
    rc = libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        errno = ctypes.get_errno()
        raise _SetupError(f"mount {source} -> {target}: {os.strerror(errno)}")


def _unshare(flags: int) -> bool:
    _, libc = _libc()
    return libc.unshare(flags) == 0


def _prctl(option: int, value: int) -> None:
    _, libc = _libc()
    libc.prctl(option, value, 0, 0, 0)


def _blocked_ancestor(path: str) -> str | None:
    """Highest ancestor of `path` (itself included) that other users cannot traverse, or None."""
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        candidate = os.path.join(*parts[:i])
        if not os.stat(candidate).st_mode & 0o001:
            return candidate
    return None


def _bind_readonly(source: str, root: str) -> None:
    target = root + source
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, _MS_BIND | _MS_REC)
    _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID)


def _build_root(root: str, limits: SandboxLimits, uid: int) -> None:
    """A private root holding only the runtime, a few devices, a fresh /proc and the work directory."""
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates to the host
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID, "size=1m,mode=0755")
    # System libraries (the interpreter's libc, libssl, libffi, ...) and the interpreter itself.
    for top in ("lib", "lib64", "lib32", "libx32"):
        host = "/" + top
        if os.path.islink(host):
            os.symlink(os.readlink(host), os.path.join(root, top))
        elif os.path.isdir(host):
            _bind_readonly(host, root)
    for directory in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32"):
        if os.path.isdir(directory) and not os.path.islink(directory):
            _bind_readonly(directory, root)
    for prefix in sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}):
        if not prefix.startswith(("/usr/lib", "/lib")):
            _bind_readonly(prefix, root)
    binary = os.path.realpath(sys.executable)
    if not os.path.exists(root + binary):
        _bind_readonly(binary, root)
    os.makedirs(os.path.join(root, "dev"), mode=0o755)
    for device in (d for d in _DEVICES if os.path.exists("/dev/" + d)):
        target = os.path.join(root, "dev", device)
        open(target, "a").close()
        _mount("/dev/" + device, target, None, _MS_BIND)
    os.mkdir(os.path.join(root, "proc"), 0o555)
    _mount("proc", os.path.join(root, "proc"), "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    work = root + WORKDIR
    os.mkdir(work, 0o700)
    _mount(
        "tmpfs",
        work,
        "tmpfs",
        _MS_NOSUID | _MS_NODEV,
        f"size={limits.workdir_mb}m,mode=0700,uid={uid},gid={uid}",
    )
    os.symlink(WORKDIR, os.path.join(root, "tmp"))
    _mount(None, root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID, "size=1m,mode=0755")
    os.chroot(root)
    os.chdir("/")


def _report(fd: int, **entries) -> None:
    os.write(fd, (json.dumps(entries) + "\n").encode())


def _child_main(config_path: str) -> None:
    """Launcher: enter the namespaces, start the checker, report how it ended."""
    config = json.loads(Path(config_path).read_text())
    outer = Path(config["outer"])
    report_fd = os.open(outer / "report.json", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    is_root = os.geteuid() == 0
    namespaces = False
    isolation = {
        "network": "socket-disabled",
        "user": "same-user",
        "filesystem": "none",
        "pid_namespace": False,
        "verdict": "checker-process",
    }
    if is_root and config["namespaces"]:
        namespaces = _unshare(_CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS)
    if namespaces:
        isolation.update(network="netns", pid_namespace=True, filesystem="private-root", user="uid-per-run")
    elif not is_root and _unshare(_CLONE_NEWUSER | _CLONE_NEWNET):
        isolation["network"] = "netns"
    elif is_root:
        # Root without namespaces: still give the program its own uid when it can reach the interpreter.
        reachable = all(_blocked_ancestor(os.path.realpath(p)) is None for p in (sys.base_prefix, sys.prefix))
        isolation["user"] = "uid-per-run" if reachable else "root"
    pid = os.fork()
    if pid == 0:
        try:
            _checker_main(config, report_fd, namespaces, isolation)
        except _SetupError as err:
            _report(report_fd, setup_error=str(err))
            os._exit(70)
        except BaseException:  # noqa: BLE001 - the checker never lets an exception escape silently
            import traceback

            _report(report_fd, setup_error="checker crashed:\n" + traceback.format_exc())
            os._exit(70)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1)


def _checker_main(config: dict, report_fd: int, namespaces: bool, isolation: dict) -> None:
    """Checker (PID 1 of the new PID namespace): build the view, start the worker, run the checks."""
    limits = SandboxLimits(**config["limits"])
    uid = config["uid"]
    drop_user = isolation["user"] == "uid-per-run"
    if namespaces:
        _build_root(str(Path(config["outer"]) / "root"), limits, uid)
        work = WORKDIR
    else:
        work = str(Path(config["outer"]) / "work")
        os.mkdir(work, 0o700)
        if drop_user:
            os.chown(work, uid, uid)
    if not drop_user:
        _prctl(_PR_SET_DUMPABLE, 0)  # same uid as the worker: no ptrace, no /proc/<pid>/fd of the checker
    _report(report_fd, isolation=isolation)
    checks = config["checks"]
    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_fd)
        os.close(to_worker_w)
        os.close(from_worker_r)
        _worker_main(
            config["source"],
            limits,
            uid if drop_user else None,
            work,
            isolation,
            to_worker_r,
            from_worker_w,
            checks is not None,
        )
        os._exit(0)
    os.close(to_worker_r)
    os.close(from_worker_w)
    try:
        _judge(pid, checks, limits, report_fd, to_worker_w, from_worker_r)
    except BaseException as err:  # noqa: BLE001 - whatever the program did, it can only fail itself
        _kill_and_wait(pid)
        _report(
            report_fd,
            verdict="failed",
            reason=f"the checks could not finish: {type(err).__name__}: {err}"[:2000],
        )


def _kill_and_wait(pid: int) -> int:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return _wait(pid)


def _judge(
    pid: int, checks: dict | None, limits: SandboxLimits, report_fd: int, to_worker_w: int, from_worker_r: int
) -> None:
    """Wait for the worker (no checks) or run the checks against it; report the verdict."""
    if checks is None:
        os.close(to_worker_w)
        os.close(from_worker_r)
        status = _wait(pid)
        verdict = "completed" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "failed"
        _report(report_fd, verdict=verdict, **_exit_info(status, limits))
        return
    verdict, reason = _run_checks(checks, to_worker_w, from_worker_r)
    if verdict == "passed":
        os.kill(pid, signal.SIGKILL)
        status = _wait(pid)
        _report(report_fd, verdict="passed", reason="", exit_status=None)
        return
    if reason != "program-ended":
        os.kill(pid, signal.SIGKILL)
    status = _wait(pid)
    info = _exit_info(status, limits)
    if reason == "program-ended":
        reason = f"the program ended before its checks finished ({info['exit_description']})"
    _report(report_fd, verdict="failed", reason=reason, **info)


def _wait(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def _exit_info(status: int, limits: SandboxLimits) -> dict:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        # RLIMIT_CPU sends SIGXCPU at the soft limit and SIGKILL at the hard one.
        cpu_limit = sig == signal.SIGXCPU or (
            sig == signal.SIGKILL and usage.ru_utime + usage.ru_stime >= limits.cpu_s
        )
        try:
            name = signal.Signals(sig).name
        except ValueError:  # real-time signals have no name
            name = f"signal {sig}"
        return {"exit_status": 128 + sig, "cpu_limit": cpu_limit, "exit_description": f"killed by {name}"}
    code = os.WEXITSTATUS(status)
    return {"exit_status": code, "cpu_limit": False, "exit_description": f"exit status {code}"}


class _Violation(BaseException):
    """The program ended, or sent something that is not plain data: the run fails whatever the checks do.

    A BaseException, so that a test's own `except Exception` / `except TypeError` cannot swallow it;
    the checker also remembers it, so a swallowed one still fails the run.
    """


def _run_checks(checks: dict, to_worker: int, from_worker: int) -> tuple[str, str]:
    """Run the trusted checks against proxies of the program's functions: ("passed"|"failed", reason)."""
    import builtins
    import traceback

    try:
        ready = _receive(from_worker)
    except (NotPlainData, ValueError, RecursionError) as err:
        return "failed", f"malformed message from the program: {type(err).__name__}"
    if ready is None or ready.get("ready") is not True:
        return "failed", "program-ended"
    violations: list[str] = []

    def violation(reason: str) -> _Violation:
        violations.append(reason)
        return _Violation(reason)

    def proxy(name: str):
        def call(*args, _project: str = "value", **kwargs):
            if violations:
                raise _Violation(violations[0])
            request = {
                "call": name,
                "args": encode_plain(list(args)),
                "kwargs": encode_plain(kwargs),
                "project": _project,
            }
            try:
                _send(to_worker, request)
                answer = _receive(from_worker)
            except OSError:  # the pipe broke: the program is gone
                answer = None
            except (NotPlainData, ValueError, RecursionError) as err:
                raise violation(f"{name}() sent a malformed answer: {err}") from None
            if answer is None:
                raise violation("program-ended")
            if "value" in answer:
                try:
                    return decode_plain(answer["value"])
                except (NotPlainData, RecursionError) as err:
                    raise violation(f"{name}() returned a value that is not plain data: {err}") from None
            error = str(answer.get("error", "Exception"))
            message = str(answer.get("message", ""))[:500]
            if error == "NotPlainData":
                raise violation(
                    f"{message} (only None, bool, int, float, complex, str, bytes, list, tuple, "
                    "dict, set pass a comparison)"
                )
            exc_type = getattr(builtins, error, None)
            if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
                exc_type = RuntimeError
            raise exc_type(f"{name}() raised {error}: {message}")

        call.__name__ = name
        call.is_not_none = lambda *args, **kwargs: call(*args, _project="not_none", **kwargs)
        return call

    namespace: dict = {"__name__": "__checks__", "__builtins__": builtins}
    try:
        namespace["DATA"] = decode_plain(checks.get("data"))
        exec(compile(checks["setup"], "<checks setup>", "exec"), namespace)  # trusted: from the data set
        for name in checks["candidates"]:
            namespace[name] = proxy(name)
        exec(compile(checks["code"], "<checks>", "exec"), namespace)  # trusted: from the data set
    except BaseException:  # noqa: BLE001 - any exception in the checks is a failed check
        if violations:
            return "failed", violations[0]
        return "failed", traceback.format_exc(limit=-3)[-2000:]
    if violations:  # raised inside the checks and swallowed there
        return "failed", violations[0]
    return "passed", ""


def _worker_main(
    source: str,
    limits: SandboxLimits,
    uid: int | None,
    work: str,
    isolation: dict,
    requests: int,
    answers: int,
    serve: bool,
) -> None:
    """Worker: drop privileges, apply the limits, run the program, then answer the checker's calls."""
    # Keep only stdio and the two pipes (moved to 3 and 4): no other descriptor reaches the program.
    os.dup2(requests, 3)
    os.dup2(answers, 4)
    requests, answers = 3, 4
    os.set_inheritable(3, False)
    os.set_inheritable(4, False)
    os.closerange(5, 65536)
    cpu = max(1, math.ceil(limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    address_space = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    file_size = limits.file_size_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if uid is not None:
        # Drop to the run's own uid before any model code runs: rlimits survive, root privileges do not.
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(work)
    os.environ.clear()
    os.environ.update(_clean_env(), HOME=work, TMPDIR=work)
    os.umask(0o077)
    if isolation["network"] == "socket-disabled":
        _disable_sockets()
    program = os.path.join(work, "program.py")
    with open(program, "w") as handle:
        handle.write(source)
    sys.argv = [program]
    sys.path.insert(0, work)
    import builtins
    import traceback

    namespace = {"__name__": "__main__", "__file__": program, "__builtins__": builtins}
    try:
        exec(compile(source, program, "exec"), namespace)
    except SystemExit as err:
        sys.stdout.flush()
        if err.code is not None and not isinstance(err.code, int):
            print(err.code, file=sys.stderr)
        sys.stderr.flush()
        os._exit(err.code if isinstance(err.code, int) else (0 if err.code is None else 1))
    except BaseException:  # noqa: BLE001 - the program's own error, shown in its stderr
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    if not serve:
        return
    _send(answers, {"ready": True})
    while True:
        request = _receive(requests)
        if request is None:
            os._exit(0)
        name = str(request.get("call"))
        if name not in namespace:
            _send(answers, {"error": "NameError", "message": f"name {name!r} is not defined by the program"})
            continue
        try:
            value = namespace[name](*decode_plain(request["args"]), **decode_plain(request["kwargs"]))
            if request.get("project") == "not_none":
                value = value is not None
            answer = {"value": encode_plain(value)}
        except NotPlainData as err:
            answer = {"error": "NotPlainData", "message": f"{name}() returned {err}"}
        except BaseException as err:  # noqa: BLE001 - reported to the checks as an exception
            error = type(err).__name__ if isinstance(err, Exception) else "RuntimeError"
            answer = {"error": error, "message": f"{type(err).__name__}: {str(err)[:500]}"}
        sys.stdout.flush()
        try:
            _send(answers, answer)
        except (NotPlainData, ValueError) as err:  # too large, or an int beyond sys.get_int_max_str_digits()
            _send(answers, {"error": "NotPlainData", "message": f"{name}() returned {err}"})


def _disable_sockets() -> None:
    """Best-effort in-process network guard used only when no network namespace is available."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the sandbox")

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, refuse)
    sys.modules["_socket"] = None  # a later `import _socket` fails


if __name__ == "__main__":
    _child_main(sys.argv[1])
