"""Escape attempts against balora.sandbox: each must be contained (real subprocesses, real kernel limits)."""

import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from balora.sandbox import SandboxLimits, run_program, run_programs

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="file-system and user isolation need root (see eval/README.md)")
FAST = SandboxLimits(timeout_s=5, cpu_s=5)


def test_plain_program_passes_and_reports_isolation():
    result = run_program("import json, collections\nprint(sum(range(10)))\n", FAST)
    assert result.status == "passed" and result.stdout.strip() == "45"
    assert result.isolation["network"] in ("netns", "socket-disabled")
    if IS_ROOT:
        assert result.isolation == {"network": "netns", "user": "nobody",
                                    "filesystem": "read-only-outside-workdir", "pid_namespace": True}


def test_failing_assert_fails():
    assert run_program("assert 1 + 1 == 3\n", FAST).status == "failed"
    assert run_program("raise SystemExit(2)\n", FAST).returncode != 0


@pytest.fixture
def victim_dir():
    """A world-writable directory with a world-writable file: only the sandbox keeps model code out."""
    directory = Path(tempfile.mkdtemp(prefix="balora-victim-"))
    os.chmod(directory, 0o777)
    victim = directory / "victim.txt"
    victim.write_text("keep me")
    os.chmod(victim, 0o666)
    yield directory
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


@needs_root
def test_cannot_write_create_or_delete_outside_workdir(victim_dir):
    victim = victim_dir / "victim.txt"
    program = f"""
import os, shutil
attempts = {{}}
def attempt(name, fn):
    try:
        fn(); attempts[name] = "succeeded"
    except OSError as err:
        attempts[name] = type(err).__name__
attempt("create", lambda: open({str(victim_dir / 'new.txt')!r}, "w").write("x"))
attempt("overwrite", lambda: open({str(victim)!r}, "w").write("pwned"))
attempt("remove", lambda: os.remove({str(victim)!r}))
attempt("rmtree", lambda: shutil.rmtree({str(victim_dir)!r}))
attempt("tmp", lambda: open("/tmp/balora-sandbox-escape.txt", "w").write("x"))
attempt("home_of_root", lambda: open("/root/escape.txt", "w").write("x"))
attempt("inside", lambda: open("ok.txt", "w").write("fine"))
print(attempts)
assert attempts["inside"] == "succeeded"
assert all(v != "succeeded" for k, v in attempts.items() if k != "inside"), attempts
"""
    result = run_program(program, FAST)
    assert result.status == "passed", result.stderr
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in victim_dir.iterdir()) == ["victim.txt"]
    assert not Path("/tmp/balora-sandbox-escape.txt").exists()
    assert not Path("/root/escape.txt").exists()


def test_socket_connect_is_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        deadline = time.time() + 4
        while time.time() < deadline:
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    program = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
except OSError as err:
    print("refused", err)
else:
    raise SystemExit("connected")
"""
    result = run_program(program, FAST)
    thread.join()
    server.close()
    assert result.status == "passed", result.stderr
    assert "refused" in result.stdout
    assert accepted == []


def test_parent_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-balora-secret-123")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_456")
    program = f"""
import os
text = repr(dict(os.environ))
for pid in ({os.getpid()}, os.getppid()) if {IS_ROOT} else ():  # same user: /proc is readable without root
    try:
        text += open(f"/proc/{{pid}}/environ", "rb").read().decode(errors="replace")
    except OSError:
        pass
print(text)
"""
    result = run_program(program, FAST)
    assert result.status == "passed", result.stderr
    assert "secret" not in result.stdout
    assert "OPENAI_API_KEY" not in result.stdout and "HF_TOKEN" not in result.stdout


def _processes_of_uid(uid: int) -> list[int]:
    """Live (not zombie) processes of a user; a killed namespace's zombies wait for the host's init."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if os.stat(f"/proc/{entry}").st_uid == uid and state != "Z":
                    pids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return pids


@needs_root
def test_fork_bomb_is_contained_and_fully_killed():
    before = set(_processes_of_uid(65534))
    program = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    result = run_program(program, SandboxLimits(timeout_s=2, cpu_s=2, max_processes=16))
    assert result.status in ("timeout", "failed")
    assert time.monotonic() - start < 10
    time.sleep(0.3)
    assert set(_processes_of_uid(65534)) - before == set()


def test_huge_allocation_fails_with_memory_error():
    result = run_program("x = bytearray(10 * 1024 ** 3)\n", FAST)
    assert result.status == "failed"
    assert "MemoryError" in result.stderr


def test_infinite_loop_times_out_and_escaped_children_die():
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()  # leaves the process group: only the PID namespace still reaches it\n"
        "    while True: time.sleep(0.1)\n"
        "while True: pass\n"
    )
    before = set(_processes_of_uid(65534)) if IS_ROOT else set()
    start = time.monotonic()
    result = run_program(program, SandboxLimits(timeout_s=1.5, cpu_s=30))
    assert result.status == "timeout"
    assert time.monotonic() - start < 6
    if IS_ROOT:
        time.sleep(0.3)
        assert set(_processes_of_uid(65534)) - before == set()


def test_cpu_limit_reports_timeout():
    result = run_program("while True: pass\n", SandboxLimits(timeout_s=20, cpu_s=1))
    assert result.status == "timeout"
    assert result.wall_s < 10


def test_output_is_capped_by_file_size_limit():
    result = run_program("import sys\nwhile True: sys.stdout.write('x' * 65536)\n",
                         SandboxLimits(timeout_s=5, file_size_mb=1))
    assert result.status in ("failed", "timeout")
    assert len(result.stdout) <= 70 * 1024


def test_run_programs_keeps_order():
    results = run_programs([f"print({i})" for i in range(6)] + ["assert False"], FAST, max_workers=3)
    assert [r.stdout.strip() for r in results[:6]] == [str(i) for i in range(6)]
    assert results[-1].status == "failed"


def test_fallback_without_namespaces_disables_sockets_and_reports_it():
    program = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
               "except OSError as err:\n    print('refused', err)\n")
    result = run_program(program, FAST, namespaces=False)
    assert result.status == "passed", result.stderr
    assert "refused" in result.stdout
    assert result.isolation["network"] in ("socket-disabled", "netns")
    assert result.isolation["pid_namespace"] is False and result.isolation["filesystem"] == "none"
    assert run_program("while True: pass\n", SandboxLimits(timeout_s=1, cpu_s=30), namespaces=False).status == "timeout"
