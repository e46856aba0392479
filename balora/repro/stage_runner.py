"""A rehearsal's stages in children forked from a process that imported the heavy modules once.

A rehearsal stage is toy-scale (a GLUE training on 32 samples, an evaluation of 2 problems), so a fresh
`python finetune_glue.py ...` spends most of its time importing torch, transformers, peft and datasets
(~6 s of CPU each time). `run(argv, env, cwd)` runs a plain single-process Python command instead in a
child of this process:

* the first stage of a command imports the command's module here, once: imports only, no torch op, so
  no thread pool exists when forking (the one thread an import starts, pyarrow's allocator thread, is
  fork-safe; with any other thread here the command runs as a subprocess);
* each stage is `os.fork()`: the child takes the command's argv, environment and working folder, runs
  its entry point as `python script.py args` / `python -m module args` would (runpy), and exits with
  the status that command would have had (0, a user error's 2, a crash's 1 and its traceback, -N when
  killed by signal N), writing to the same stdout and stderr;
* the child dies with this process (PR_SET_PDEATHSIG), even when only the runner is killed, and a
  SIGTERM or Ctrl-C of the runner kills it as subprocess.run does.

Launchers (deepspeed, torch.distributed.run), other Python flags and other interpreters run as
subprocesses. What a child does not get afresh: environment variables read at import time (e.g.
OMP_NUM_THREADS, HF_HUB_OFFLINE) keep the values they had at the import here, which in a rehearsal are
the same for every stage (balora/repro/run.py sets them before the first one).
"""

from __future__ import annotations

import importlib
import os
import random
import re
import runpy
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Threads that may run while forking: pyarrow's jemalloc background thread (started by `import datasets`;
# jemalloc's fork handlers keep the allocator consistent in the child, as in DataLoader workers).
FORK_SAFE_THREADS = ("jemalloc_bg_thd",)


@dataclass
class Entry:
    """What a command runs: a module (`python -m`) or a script file, and the path entry Python puts first."""

    module: str | None
    script: str | None
    args: list[str]
    path0: str | None  # None: -P (no entry)


def entry_of(argv: list[str], cwd: str) -> Entry | None:
    """The entry point of `python [-P] -m balora.<module> args` or `python script.py args` run by this
    interpreter; None for anything else (it runs as a subprocess)."""
    if len(argv) < 2 or not _is_this_python(argv[0], cwd):
        return None
    rest, safe_path = argv[1:], False
    if rest[0] == "-P":
        rest, safe_path = rest[1:], True
    if len(rest) >= 2 and rest[0] == "-m":
        if not rest[1].startswith("balora."):  # e.g. torch.distributed.run: a launcher of processes
            return None
        return Entry(rest[1], None, rest[2:], None if safe_path else cwd)
    if not rest or rest[0].startswith("-") or not rest[0].endswith(".py"):
        return None
    script = os.path.join(cwd, rest[0])
    if not os.path.isfile(script):
        return None
    # eval/*.py re-exec as `python -P -m balora.cli.eval_<bench>` (eval/math.py would shadow `math`).
    execs = re.search(
        r'os\.execv\(sys\.executable, \[sys\.executable, "-P", "-m", "(balora\.[\w.]+)"', _read(script)
    )
    if execs:
        return Entry(execs.group(1), None, rest[1:], None)
    return Entry(None, rest[0], rest[1:], None if safe_path else os.path.dirname(os.path.abspath(script)))


def run(argv: list[str], env: dict[str, str], cwd: str | Path) -> tuple[int, bool]:
    """Run a command as `subprocess.run(argv, env=env, cwd=cwd)` would: its exit status (-N: killed by
    signal N), and whether it ran forked from this process."""
    cwd = str(cwd)
    entry = entry_of(argv, cwd)
    if entry is not None:
        _preload(entry, cwd)
    if entry is None or not _fork_is_safe():
        return subprocess.run(argv, env=env, cwd=cwd).returncode, False
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(entry, env, cwd, parent)  # never returns
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:  # SIGTERM/Ctrl-C of the runner (KeyboardInterrupt): as subprocess.run does
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status), True


def _child(entry: Entry, env: dict[str, str], cwd: str, parent: int) -> None:
    status = 1
    try:
        _die_with(parent)
        # A fresh interpreter's signal handling (the runner turns SIGTERM into KeyboardInterrupt).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        _reseed()
        base = sys.path if sys.flags.safe_path else sys.path[1:]  # less the runner's own first entry
        sys.path[:] = ([entry.path0] if entry.path0 else []) + base
        if entry.module:
            sys.argv = [entry.module, *entry.args]  # runpy puts the module's file in argv[0]
            sys.modules.pop(entry.module, None)  # imported here to preload; `python -m` runs it afresh
            runpy.run_module(entry.module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [entry.script, *entry.args]
            runpy.run_path(entry.script, run_name="__main__")
        status = 0
    except SystemExit as exit:
        status = _exit_status(exit.code)
    except BaseException as error:
        _print_traceback(error)
        if isinstance(error, KeyboardInterrupt):  # Python's own exit on an uncaught Ctrl-C
            _flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        _flush()
        os._exit(status)  # never back into the runner's frames or its exit handlers


def _print_traceback(error: BaseException) -> None:
    """The traceback the command's own process would print: from its entry point on (no frames of this
    module or runpy), through sys.excepthook."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__, "<frozen runpy>"):
        tb = tb.tb_next
    sys.excepthook(type(error), error.with_traceback(tb), tb)  # (it prints the error's own traceback)


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)  # sys.exit("message"): the message, status 1
    return 1


def _preload(entry: Entry, cwd: str) -> None:
    """Import the command's module here once, so each later child finds it (and torch, ...) imported."""
    module = entry.module
    if module is None:  # a shim script: the balora module it imports
        found = re.search(r"^from (balora\.[\w.]+) import", _read(os.path.join(cwd, entry.script)), re.M)
        module = found.group(1) if found else None
    if module and module not in sys.modules:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the child meets the same error and reports it as the command would
            pass


def _fork_is_safe() -> bool:
    """Linux, and no thread here but the main one and the allocator's."""
    if not hasattr(os, "fork") or not os.path.isdir("/proc/self/task"):
        return False
    me = str(os.getpid())
    for task in os.listdir("/proc/self/task"):
        if task != me and _read(f"/proc/self/task/{task}/comm").strip() not in FORK_SAFE_THREADS:
            return False
    return True


def _die_with(parent: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the runner died before prctl
        os._exit(1)


def _reseed() -> None:
    """The seeds a fresh interpreter draws (a stage seeds what it uses; unseeded draws stay independent)."""
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _is_this_python(program: str, cwd: str) -> bool:
    path = program if os.sep in program else shutil.which(program)
    return path is not None and os.path.abspath(os.path.join(cwd, path)) == os.path.abspath(sys.executable)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream: nothing left to write
            pass
