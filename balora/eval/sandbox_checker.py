"""The sandbox's trusted processes, the launcher and the checker (see balora/eval/sandbox.py).

The evaluator starts the launcher as `python -I -S -c "...launcher_main(CONFIG, REPORT_FD)"`. This module imports
only the standard library (ctypes for mount, unshare, prctl and the seccomp filter) and
balora.eval.sandbox_worker (not the json package: its JSON goes through `_json` directly), so that
start-up stays cheap: it runs once per sample.

    launcher  reads and deletes the run's config, enters the namespaces, forks the checker
    checker   builds the worker's view, forks and execs the worker (a fresh interpreter that receives
              only the program), then runs the task's checks against it through proxies
"""

from __future__ import annotations

import math
import os
import resource
import signal
import sys

from balora.eval import sandbox_worker
from balora.eval.sandbox_worker import (
    ANSWERS_FD,
    REQUESTS_FD,
    NotPlainData,
    decode_plain,
    dumps,
    encode_plain,
    loads,
)

# Variables copied into the program's environment; nothing else (no tokens, keys, proxies) passes.
ENV_PASSTHROUGH = ("LANG", "LC_ALL", "TZ")
WORKDIR = "/work"  # the program's directory inside the private root
WORKER_FLAGS = ("-I", "-S")  # isolated mode, no site: no environment, no user or site packages
SHM_SEGMENTS = 64  # SysV shared-memory segments per sample (kernel.shmmni of its IPC namespace)
MSG_QUEUES = 16  # SysV message queues per sample (kernel.msgmni; 16 KiB each by default)

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_DUMPABLE, _PR_SET_SECCOMP, _PR_SET_NO_NEW_PRIVS = 4, 22, 38
_DEVICES = ("null", "zero", "random", "urandom")
# seccomp: (AUDIT_ARCH of the machine, syscall numbers of memfd_create and memfd_secret).
_SECCOMP_ARCH = {"x86_64": (0xC000003E, (319, 447)), "aarch64": (0xC00000B7, (279, 447))}


class SetupError(Exception):
    """The sandbox could not be built (a property of the machine, reported before any program code runs)."""


def clean_env() -> dict[str, str]:
    """The environment of the launcher and the worker: a few locale variables and fixed settings."""
    env = {key: os.environ[key] for key in ENV_PASSTHROUGH if key in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env.update(
        PATH="/usr/bin:/bin", PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8"
    )
    return env


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes, ctypes.CDLL(None, use_errno=True)
    return _LIBC


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
        raise SetupError(f"mount {source} -> {target}: {os.strerror(errno)}")


def _unshare(flags: int) -> bool:
    _, libc = _libc()
    return libc.unshare(flags) == 0


def _prctl(option: int, value: int) -> None:
    _, libc = _libc()
    libc.prctl(option, value, 0, 0, 0)


def _deny_memfd() -> bool:
    """A seccomp filter: memfd_create and memfd_secret fail with EPERM (their files are in no mount with
    a size cap), x32 syscalls too, and a syscall of another ABI (int 0x80) kills the process.
    Needs no_new_privs. Returns False on a machine without a known syscall table (nothing installed)."""
    import struct

    arch = _SECCOMP_ARCH.get(os.uname().machine)
    if arch is None:
        return False
    audit_arch, numbers = arch
    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, eperm, kill = 0x7FFF0000, 0x00050000 | 1, 0x80000000
    deny_at = 6 + len(numbers)  # index of the `ret eperm` instruction
    program = [
        (load, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, audit_arch),
        (ret, 0, 0, kill),
        (load, 0, 0, 0),  # seccomp_data.nr
        (jge, deny_at - 5, 0, 0x40000000),  # the x32 ABI's syscalls
        *((jeq, deny_at - 6 - i, 0, nr) for i, nr in enumerate(numbers)),
        (ret, 0, 0, allow),
        (ret, 0, 0, eperm),
    ]
    ctypes, libc = _libc()
    filters = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(program), ctypes.addressof(filters))
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(_PR_SET_SECCOMP, 2, ctypes.addressof(prog), 0, 0) != 0:  # SECCOMP_MODE_FILTER
        errno = ctypes.get_errno()
        if errno == 22:  # EINVAL: a kernel built without seccomp filters (memfd stays counted by a cgroup)
            return False
        raise OSError(errno, "seccomp filter refused: " + os.strerror(errno))
    return True


def _blocked_ancestor(path: str) -> str | None:
    """Highest ancestor of `path` (itself included) that other users cannot traverse, or None."""
    parts = path.split("/")
    for i in range(2, len(parts) + 1):
        candidate = "/".join(parts[:i]) or "/"
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


def _limit_ipc(proc: str, memory_bytes: int) -> None:
    """SysV IPC limits of the sample's own IPC namespace, written through its fresh /proc.

    A new IPC namespace starts with shmmax = shmall = unlimited; RLIMIT_AS counts a segment only
    while it is attached, so detached segments would be held outside every limit.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    for name, value in (
        ("shmmax", memory_bytes),  # largest segment
        ("shmall", memory_bytes // page),  # all segments together, in pages
        ("shmmni", SHM_SEGMENTS),
        ("shm_rmid_forced", 1),  # a segment goes with the last process that used it
        ("msgmni", MSG_QUEUES),
    ):
        try:
            with open(f"{proc}/sys/kernel/{name}", "w") as handle:
                handle.write(str(value))
        except OSError as err:
            raise SetupError(f"kernel.{name} of the sample's IPC namespace: {err}") from err


def _build_root(root: str, limits: dict, uid: int) -> None:
    """A private root holding only the runtime, a few devices, a fresh /proc and the work directory."""
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates to the host
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID, "size=1m,nr_inodes=4096,mode=0755")
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
    _limit_ipc(os.path.join(root, "proc"), limits["memory_mb"] * 1024 * 1024)
    work = root + WORKDIR
    os.mkdir(work, 0o700)
    # The only writable mount: its pages and inodes are capped (an inode costs kernel memory, ~1 KiB).
    _mount(
        "tmpfs",
        work,
        "tmpfs",
        _MS_NOSUID | _MS_NODEV,
        f"size={limits['workdir_mb']}m,nr_inodes={limits['workdir_inodes']},mode=0700,uid={uid},gid={uid}",
    )
    os.symlink(WORKDIR, os.path.join(root, "tmp"))
    _mount(None, root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID, "size=1m,nr_inodes=4096,mode=0755")
    os.chroot(root)
    os.chdir("/")


# The worker's command: the compiled code of balora/eval/sandbox_worker.py arrives in argv (base64 of
# marshal), so the fresh interpreter neither compiles it (~5 ms a sample) nor needs the project's files.
_WORKER_STUB = (
    "import binascii, marshal, sys; "
    "exec(marshal.loads(binascii.a2b_base64(sys.argv[1])), {'__name__': '__main__', '__file__': '<worker>'})"
)


def _worker_code() -> str:
    """The worker module's code object (from its up-to-date .pyc when there is one), for _WORKER_STUB."""
    import binascii
    import marshal

    code = sandbox_worker.__loader__.get_code(sandbox_worker.__name__)
    return binascii.b2a_base64(marshal.dumps(code), newline=False).decode()


def _report(fd: int, **entries) -> None:
    os.write(fd, (dumps(entries) + "\n").encode())


def _move_high(fd: int) -> int:
    """The same file on a close-on-exec descriptor >= 10 (fds 3 and 4 are the worker's pipes)."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def launcher_main(config_path: str, report_fd: int) -> None:
    """Launcher: read (and delete) the run's config, enter the namespaces, start the checker, report.

    Args:
        config_path: the run's config (JSON, readable by root only); deleted once read.
        report_fd: the report file, a file without a name inherited from the evaluator; the launcher
            and the checker write their JSON lines (isolation, verdict, set-up errors) to it.
    """
    # Nothing of this process (the config with the checks) can be read through /proc by the worker,
    # even where it runs as the same user (not root).
    _prctl(_PR_SET_DUMPABLE, 0)
    with open(config_path) as handle:
        config = loads(handle.read())
    os.unlink(config_path)
    report_fd = _move_high(report_fd)
    cgroup_fd = None
    if config.get("cgroup_procs"):
        cgroup_fd = _move_high(os.open(config["cgroup_procs"], os.O_WRONLY | os.O_CLOEXEC))
    worker_code = _worker_code()  # read now: the private root does not hold the project
    config["python"] = os.path.realpath(sys.executable)  # the binary the private root binds
    is_root = os.geteuid() == 0
    namespaces = False
    isolation = {
        "network": "socket-disabled",
        "user": "same-user",
        "filesystem": "none",
        "pid_namespace": False,
        "verdict": "checker-process",
        "memory": config.get("memory", "rlimits"),
    }
    if is_root and config["namespaces"]:
        namespaces = _unshare(_CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS)
    if namespaces:
        isolation.update(network="netns", pid_namespace=True, filesystem="private-root", user="uid-per-run")
    elif not is_root and _unshare(_CLONE_NEWUSER | _CLONE_NEWNET):
        isolation["network"] = "netns"
    elif is_root:
        # Root without namespaces: still give the program its own uid when it can reach the interpreter.
        reachable = all(
            _blocked_ancestor(os.path.realpath(p)) is None
            for p in (sys.base_prefix, os.path.realpath(sys.executable))
        )
        isolation["user"] = "uid-per-run" if reachable else "root"
    pid = os.fork()
    if pid == 0:
        _checker_process(config, report_fd, cgroup_fd, worker_code, namespaces, isolation)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):  # the checker itself died (e.g. a crash in trusted test code)
        _report(report_fd, checker_ended=_describe(status))
    os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1)


def _checker_process(
    config: dict, report_fd: int, cgroup_fd: int | None, worker_code: str, namespaces: bool, isolation: dict
) -> None:
    """The forked checker: set-up errors are reported as such, anything later fails the sample."""
    try:
        worker = _setup(config, report_fd, cgroup_fd, worker_code, namespaces, isolation)
    except SetupError as err:
        _report(report_fd, setup_error=str(err))
        os._exit(70)
    except BaseException as err:  # noqa: BLE001 - the checker never lets an exception escape silently
        _report(report_fd, setup_error=f"the checker could not set up the run: {type(err).__name__}: {err}")
        os._exit(70)
    try:
        _judge(worker, config["checks"], config["limits"], report_fd)
    except BaseException as err:  # noqa: BLE001 - whatever the program did, it can only fail itself
        _kill_and_wait(worker[0])
        _report(
            report_fd,
            verdict="failed",
            reason=f"the checks could not finish: {type(err).__name__}: {err}"[:2000],
        )
    os._exit(0)


def _setup(
    config: dict, report_fd: int, cgroup_fd: int | None, worker_code: str, namespaces: bool, isolation: dict
) -> tuple[int, int, int]:
    """Build the worker's view and start it: (pid, fd to send requests on, fd to read answers from)."""
    limits, uid = config["limits"], config["uid"]
    drop_user = isolation["user"] == "uid-per-run"
    if namespaces:
        _build_root(config["outer"] + "/root", limits, uid)
        work = WORKDIR
    else:
        work = config["outer"] + "/work"
        os.mkdir(work, 0o700)
        if drop_user:
            os.chown(work, uid, uid)
    _report(report_fd, isolation=isolation)
    requests_r, requests_w = (_move_high(fd) for fd in os.pipe())
    answers_r, answers_w = (_move_high(fd) for fd in os.pipe())
    pid = os.fork()
    if pid == 0:
        _exec_worker(
            config,
            uid if drop_user else None,
            work,
            isolation,
            (requests_r, answers_w),
            report_fd,
            cgroup_fd,
            worker_code,
        )
    for fd in (requests_r, answers_w) + ((cgroup_fd,) if cgroup_fd is not None else ()):
        os.close(fd)
    # The checker's own output never goes where the program's does (its stdout file is readable
    # through the worker's /proc/self/fd/1).
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return pid, requests_w, answers_r


def _exec_worker(
    config: dict,
    uid: int | None,
    work: str,
    isolation: dict,
    pipes: tuple[int, int],
    report_fd: int,
    cgroup_fd: int | None,
    worker_code: str,
) -> None:
    """In the forked child: join the memory cgroup, keep only stdio and the pipes, apply the limits, drop
    to the run's uid, then exec a fresh interpreter with only the program (never returns)."""
    limits = config["limits"]
    try:
        if cgroup_fd is not None:
            os.write(cgroup_fd, b"0")  # "0": this process; its children follow
        os.dup2(pipes[0], REQUESTS_FD)
        os.dup2(pipes[1], ANSWERS_FD)
        os.closerange(5, report_fd)  # report_fd (close-on-exec) stays open for a set-up error below
        os.closerange(report_fd + 1, 65536)
        cpu = max(1, math.ceil(limits["cpu_s"]))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        address_space = limits["memory_mb"] * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"], limits["max_processes"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_open_files"], limits["max_open_files"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            # Drop to the run's own uid before any model code runs: rlimits survive, root privileges do not.
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        _deny_memfd()
        os.chdir(work)
        os.umask(0o077)
        try:
            with open("program.py", "w", encoding="utf-8") as handle:
                handle.write(config["source"])
        except (OSError, UnicodeError) as err:  # the program's own fault (e.g. a lone surrogate): it fails
            os.write(2, f"the program could not be written as UTF-8: {err}\n".encode())
            os._exit(1)
        file_size = limits["file_size_mb"] * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        python = config["python"]
        argv = [
            python,
            *WORKER_FLAGS,
            "-c",
            _WORKER_STUB,
            worker_code,
            "serve" if config["checks"] else "run",
        ]
        if isolation["network"] == "socket-disabled":
            argv.append("no-sockets")
        os.execve(python, argv, {**clean_env(), "HOME": work, "TMPDIR": work})
    except BaseException as err:  # noqa: BLE001 - reported as the machine's problem, not the program's
        _report(report_fd, setup_error=f"the worker could not be started: {type(err).__name__}: {err}")
    os._exit(70)


def _kill_and_wait(pid: int) -> int:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return _wait(pid)


def _judge(worker: tuple[int, int, int], checks: dict | None, limits: dict, report_fd: int) -> None:
    """Wait for the worker (no checks) or run the checks against it; report the verdict."""
    pid, to_worker, from_worker = worker
    if checks is None:
        os.close(to_worker)
        os.close(from_worker)
        status = _wait(pid)
        verdict = "completed" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "failed"
        _report(report_fd, verdict=verdict, **_exit_info(status, limits))
        return
    verdict, reason = _run_checks(checks, to_worker, from_worker)
    if verdict == "passed":
        os.kill(pid, signal.SIGKILL)
        _wait(pid)
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


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:  # real-time signals have no name
            return f"killed by signal {sig}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _exit_info(status: int, limits: dict) -> dict:
    description = _describe(status)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        # RLIMIT_CPU sends SIGXCPU at the soft limit and SIGKILL at the hard one.
        cpu_limit = sig == signal.SIGXCPU or (
            sig == signal.SIGKILL and usage.ru_utime + usage.ru_stime >= limits["cpu_s"]
        )
        return {"exit_status": 128 + sig, "cpu_limit": cpu_limit, "exit_description": description}
    code = os.WEXITSTATUS(status)
    return {"exit_status": code, "cpu_limit": False, "exit_description": description}


class _Violation(BaseException):
    """The program ended, or sent something that is not plain data: the run fails whatever the checks do.

    A BaseException, so that a test's own `except Exception` / `except TypeError` cannot swallow it;
    the checker also remembers it, so a swallowed one still fails the run.
    """


def _run_checks(checks: dict, to_worker: int, from_worker: int) -> tuple[str, str]:
    """Run the trusted checks against proxies of the program's functions: ("passed"|"failed", reason)."""
    import builtins
    import traceback

    from balora.eval.sandbox_worker import receive, send

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
                send(to_worker, request)
                answer = receive(from_worker)
            except OSError:  # the pipe broke: the program is gone
                answer = None
            except (NotPlainData, ValueError, RecursionError) as err:
                raise violation(
                    f"{name}() sent a malformed answer: {type(err).__name__}: {err}"[:500]
                ) from None
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
        # The setup runs while the worker starts up; the tests only once the program has run.
        namespace["DATA"] = decode_plain(checks.get("data"))
        exec(compile(checks["setup"], "<checks setup>", "exec"), namespace)  # trusted: from the data set
        for name in checks["candidates"]:
            namespace[name] = proxy(name)
        tests = compile(checks["code"], "<checks>", "exec")
    except BaseException:  # noqa: BLE001 - any exception in the checks is a failed check
        return "failed", traceback.format_exc(limit=-3)[-2000:]
    try:
        ready = receive(from_worker)
    except (NotPlainData, ValueError, RecursionError) as err:
        return "failed", f"malformed message from the program: {type(err).__name__}"
    if ready is None or ready.get("ready") is not True:
        return "failed", "program-ended"
    try:
        exec(tests, namespace)  # trusted: from the data set
    except BaseException:  # noqa: BLE001 - any exception in the checks is a failed check
        if violations:
            return "failed", violations[0]
        return "failed", traceback.format_exc(limit=-3)[-2000:]
    if violations:  # raised inside the checks and swallowed there
        return "failed", violations[0]
    return "passed", ""
