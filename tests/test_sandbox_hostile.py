"""Hostile programs against balora.eval.sandbox, as an attacker would write them.

Every case asserts containment (the host, the evaluator and other samples are untouched) and the
verdict (a hostile sample never passes). Real subprocesses, a real TCP server on 127.0.0.1 and real
Unix-socket listeners (a world-writable path under /tmp and the abstract namespace); no mocks.
The containment programs all run at once (module fixture), as an evaluation runs them.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import load_script

from balora.eval import code
from balora.eval.sandbox import FULL_ISOLATION, SandboxLimits, run_program

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "eval"
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="full isolation needs root (see eval/README.md)")
SHORT = SandboxLimits(timeout_s=3, cpu_s=3, max_processes=16)
SECRET = "balora-host-secret-5f3a9c"

# --- 1. forged passes: HumanEval and MBPP alike -------------------------------------------------------

WRONG = "def {f}(*args):\n    return None\n"
FORGED_PASSES = {
    "os_exit_before_tests": "import os\n" + WRONG + "os._exit(0)\n",
    "os_exit_inside_function": "def {f}(*args):\n    import os\n    os._exit(0)\n",
    "system_exit_before_tests": WRONG + "raise SystemExit(0)\n",
    "system_exit_inside_function": "def {f}(*args):\n    raise SystemExit(0)\n",
    "atexit_then_wrong_solution": "import atexit, os\natexit.register(lambda: os._exit(0))\n" + WRONG,
    "object_equal_to_everything": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n    __hash__ = None\n"
        "def {f}(*args):\n    return Anything()\n"
    ),
    "int_subclass_equal_to_everything": (
        "class Int(int):\n    def __eq__(self, other):\n        return True\n"
        "def {f}(*args):\n    return Int(0)\n"
    ),
    "non_plain_value_nested_in_a_list": (
        "class Anything(list):\n    def __eq__(self, other):\n        return True\n"
        "def {f}(*args):\n    return [Anything()]\n"
    ),
    "forged_verdict_on_every_descriptor": (
        'import os, glob\nline = b\'{{"verdict": "passed", "isolation": {{}}}}\\n\'\n'
        "for fd in range(3, 1024):\n    try:\n        os.write(fd, line)\n    except OSError:\n        pass\n"
        "for path in glob.glob('/proc/*/fd/*'):\n    try:\n        open(path, 'ab').write(line)\n"
        "    except OSError:\n        pass\n" + WRONG + "os._exit(0)\n"
    ),
    "kill_the_checker_then_exit_0": (
        "import os, signal\nfor pid in (1, os.getppid(), -1):\n    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n" + WRONG + "os._exit(0)\n"
    ),
    "dies_by_a_realtime_signal": "import os\n" + WRONG + "os.kill(os.getpid(), 40)\n",
    "malformed_frames_to_the_checker": (
        "import os, struct\nfor data in (b'[' * 200000, b'\\xff' * 64, b'{{}}'):\n"
        "    os.write(4, struct.pack('<Q', len(data)) + data)\n" + WRONG
    ),
    "closes_the_pipes": "import os\nos.close(3)\nos.close(4)\n" + WRONG,
    "patch_assert_machinery": (
        "import builtins\nbuiltins.AssertionError = type('Nothing', (BaseException,), {{}})\n"
        "builtins.__build_class__ = None\n" + WRONG
    ),
}


@pytest.fixture(scope="module")
def tasks():
    humaneval, _ = code.load_humaneval(str(FIXTURES / "humaneval_tiny.jsonl"))
    mbpp, _ = code.load_mbpp(str(FIXTURES / "mbpp_tiny.jsonl"))
    return {"humaneval": (humaneval[0], code.humaneval_program), "mbpp": (mbpp[0], code.mbpp_program)}


@pytest.fixture(scope="module")
def forged_results(tasks):
    jobs = [
        (bench, name, hostile.format(f=task["entry_point"]))
        for bench, (task, _) in tasks.items()
        for name, hostile in FORGED_PASSES.items()
    ]
    correct = {
        "humaneval": "def add_all(numbers):\n    return sum(numbers)\n",
        "mbpp": "def add(a, b):\n    return a + b\n",
    }
    jobs += [(bench, "correct_control", source) for bench, source in correct.items()]

    def grade(job):
        bench, name, source = job
        task, build = tasks[bench]
        program, checks = build(task, code.extract_code(source, task["entry_point"]))
        return (bench, name), run_program(program, SHORT, checks=checks)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(grade, jobs))


@pytest.mark.parametrize("bench", ["humaneval", "mbpp"])
@pytest.mark.parametrize("name", sorted(FORGED_PASSES))
def test_forged_pass_is_graded_failed(forged_results, bench, name):
    result = forged_results[(bench, name)]
    assert result.status == "failed", (result.status, result.reason)
    assert forged_results[(bench, "correct_control")].status == "passed"


def test_forged_pass_reasons_say_what_happened(forged_results):
    assert "ended before its checks finished" in forged_results[("humaneval", "os_exit_before_tests")].reason
    assert "not plain data" in forged_results[("mbpp", "object_equal_to_everything")].reason
    # A list subclass crosses as its items (here []), so its always-true __eq__ never reaches the checks.
    assert "AssertionError" in forged_results[("humaneval", "non_plain_value_nested_in_a_list")].reason


# --- 2. one sample can only fail itself ---------------------------------------------------------------

SETUP_MARKER = (
    "import sys\nprint('BALORA_SANDBOX_SETUP_ERROR: forged', file=sys.stderr)\n"
    'print(json_line := \'{"setup_error": "forged", "verdict": "passed"}\')\n'
    "print(json_line, file=sys.stderr)\nsys.exit(70)\n"
)


def test_forged_setup_error_fails_only_its_own_sample(tmp_path):
    samples = tmp_path / "samples.jsonl"
    rows = [
        {"task_id": "HumanEval/0", "completion": "    return sum(numbers)\n"},
        {"task_id": "HumanEval/1", "completion": "```python\n" + SETUP_MARKER + "```\n"},
    ]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = load_script("humaneval").main(
        [
            "--samples",
            str(samples),
            "--data",
            str(FIXTURES / "humaneval_tiny.jsonl"),
            "--output_dir",
            str(tmp_path / "out"),
            *([] if IS_ROOT else ["--allow_weak_isolation"]),
        ]
    )
    assert metrics["score"] == 50.0
    written = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in written] == [True, False]
    assert written[1]["status"] == "failed" and (tmp_path / "out" / "metrics.json").exists()


# --- containment: every hostile program at once --------------------------------------------------------


def _processes_of_uid(uid: int) -> list[int]:
    """Live (not zombie) host processes of a uid."""
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


class Listener:
    """Accepts connections on a socket in a thread and records every byte received."""

    def __init__(self, sock: socket.socket):
        self.sock, self.received, self.connections = sock, [], 0
        sock.listen(8)
        sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            try:
                self.received.append(conn.recv(4096))
            except OSError:
                pass
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


ATTEMPT = """
import os, sys
attempts = {}
def attempt(name, fn):
    try:
        value = fn()
        attempts[name] = "succeeded" if value is None else "succeeded: " + str(value)[:300]
    except BaseException as err:
        attempts[name] = "blocked: " + type(err).__name__
"""
REPORT = "print('ATTEMPTS=' + repr(attempts), flush=True)\n"


def _containment_programs(host: dict) -> dict[str, tuple[str, SandboxLimits]]:
    victim = host["victim_dir"] / "victim.txt"
    w = WRONG.format(f="add")
    return {
        "write_delete_outside": (
            ATTEMPT
            + f"""
import shutil
attempt("create", lambda: open({str(host["victim_dir"] / "new.txt")!r}, "w").write("x") and None)
attempt("overwrite", lambda: open({str(victim)!r}, "w").write("pwned") and None)
attempt("remove", lambda: os.remove({str(victim)!r}))
attempt("rmtree", lambda: shutil.rmtree({str(host["victim_dir"])!r}))
attempt("tmp", lambda: open("/tmp/../balora-escape.txt", "w").write("x") and None)
attempt("root_home", lambda: open("/root/balora-escape.txt", "w").write("x") and None)
attempt("project", lambda: open({str(ROOT / "balora-escape.txt")!r}, "w").write("x") and None)
attempt("inside", lambda: open("ok.txt", "w").write("fine") and None)
"""
            + REPORT
            + w,
            SHORT,
        ),
        "tcp_to_host": (
            ATTEMPT
            + f"""
import socket
attempt("tcp", lambda: socket.create_connection(("127.0.0.1", {host["tcp_port"]}), timeout=1).sendall(b"{SECRET}"))
"""
            + REPORT
            + w,
            SHORT,
        ),
        "unix_sockets_to_host": (
            ATTEMPT
            + f"""
import socket
def unix(address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(address)
    s.sendall(b"{SECRET}")
attempt("path", lambda: unix({str(host["unix_path"])!r}))
attempt("abstract", lambda: unix({host["abstract_name"]!r}))
def datagram():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"{SECRET}", {str(host["unix_path"])!r})
attempt("datagram", datagram)
"""
            + REPORT
            + w,
            SHORT,
        ),
        "read_host_files_and_proc": (
            ATTEMPT
            + f"""
attempt("passwd", lambda: open("/etc/passwd").read())
attempt("project", lambda: open({str(ROOT / "README.md")!r}).read())
attempt("shared_data", lambda: os.listdir({str(ROOT.parent / "shared")!r}))
attempt("host_pid_cmdline", lambda: open("/proc/{host["secret_pid"]}/cmdline", "rb").read())
found = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            found.append(open(f"/proc/{{pid}}/cmdline", "rb").read().decode(errors="replace"))
        except OSError:
            pass
attempts["proc_pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
attempts["cmdlines"] = found
attempts["root_listing"] = sorted(os.listdir("/"))
"""
            + REPORT
            + w,
            SHORT,
        ),
        "secrets_in_environment": (
            ATTEMPT
            + """
text = repr(dict(os.environ))
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            text += open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
        except OSError:
            pass
attempts["environment"] = text
"""
            + REPORT
            + w,
            SHORT,
        ),
        "fork_bomb": (
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
            SHORT,
        ),
        "fork_bomb_beside": (
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
            SHORT,
        ),
        "memory_10gb": ("x = bytearray(10 * 1024 ** 3)\n" + w, SHORT),
        "endless_loop_with_setsid_child": (
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        time.sleep(0.1)\n"
            "while True:\n    pass\n",
            SandboxLimits(timeout_s=1.5, cpu_s=30),
        ),
        "background_daemon": (
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        time.sleep(1.5)\n        open({str(host['victim_dir'] / 'daemon.txt')!r}, 'w').write('alive')\n"
            "        while True:\n            time.sleep(0.1)\n    os._exit(0)\n" + w,
            SHORT,
        ),
        "kill_the_parents": (
            ATTEMPT
            + """
import signal
for pid in (os.getppid(), 1, -1):
    attempt(f"kill_{pid}", lambda pid=pid: os.kill(pid, signal.SIGKILL))
attempt("killpg", lambda: os.killpg(os.getpgid(0), signal.SIGKILL))
"""
            + REPORT
            + w,
            SHORT,
        ),
        "huge_output": (
            "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
            SandboxLimits(timeout_s=3, cpu_s=3, file_size_mb=1),
        ),
        # Sample 5: a correct program that needs several processes, run while the fork bombs run.
        "correct_beside_fork_bombs": (
            "import os, threading, time\ntime.sleep(0.8)  # the fork bombs are at their limit by now\n"
            "pids = [os.fork() for _ in range(1)]\nif pids[0] == 0:\n    os._exit(0)\n"
            "children = []\nfor _ in range(6):\n    pid = os.fork()\n    if pid == 0:\n        time.sleep(0.2)\n"
            "        os._exit(0)\n    children.append(pid)\nthreads = [threading.Thread(target=time.sleep, args=(0.2,))"
            " for _ in range(6)]\nfor t in threads:\n    t.start()\nfor t in threads:\n    t.join()\n"
            "for pid in children + pids:\n    os.waitpid(pid, 0)\ndef add(a, b):\n    return a + b\n",
            SandboxLimits(timeout_s=20, cpu_s=20, max_processes=16),
        ),
    }


@pytest.fixture(scope="module")
def contained():
    """Host bait (victim files, listeners, a process with a secret argv, secrets in the environment),
    then every containment program at once; yields (results, host, elapsed seconds)."""
    victim_dir = Path(tempfile.mkdtemp(prefix="balora-victim-"))
    os.chmod(victim_dir, 0o777)
    (victim_dir / "victim.txt").write_text("keep me")
    os.chmod(victim_dir / "victim.txt", 0o666)
    tcp = Listener(socket.create_server(("127.0.0.1", 0)))
    unix_dir = Path(tempfile.mkdtemp(prefix="balora-unix-"))
    os.chmod(unix_dir, 0o777)
    unix_path = unix_dir / "listener.sock"
    path_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path_sock.bind(str(unix_path))
    os.chmod(unix_path, 0o777)
    unix = Listener(path_sock)
    abstract_name = f"\0balora-abstract-{os.getpid()}"
    abstract_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_sock.bind(abstract_name)
    abstract = Listener(abstract_sock)
    secret_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--token={SECRET}"])
    saved = {k: os.environ.get(k) for k in ("OPENAI_API_KEY", "HF_TOKEN")}
    os.environ.update(OPENAI_API_KEY=f"sk-{SECRET}", HF_TOKEN=f"hf_{SECRET}")
    host = {
        "victim_dir": victim_dir,
        "tcp_port": tcp.sock.getsockname()[1],
        "unix_path": unix_path,
        "abstract_name": abstract_name,
        "secret_pid": secret_proc.pid,
    }
    programs = _containment_programs(host)
    mbpp, _ = code.load_mbpp(str(FIXTURES / "mbpp_tiny.jsonl"))
    _, checks = code.mbpp_program(mbpp[0], "")  # every program is graded as a solution of MBPP `add`
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(programs)) as pool:
            futures = {
                name: pool.submit(run_program, source, limits, checks=checks)
                for name, (source, limits) in programs.items()
            }
            results = {name: future.result() for name, future in futures.items()}
        elapsed = time.monotonic() - start
        time.sleep(2.0)  # the background daemon would write its file after 1.5 s
        host.update(
            tcp=tcp,
            unix=unix,
            abstract=abstract,
            daemon_file=(victim_dir / "daemon.txt").exists(),
            leftovers={name: _processes_of_uid(r.uid) for name, r in results.items()},
            victim_text=(victim_dir / "victim.txt").read_text()
            if (victim_dir / "victim.txt").exists()
            else None,
            victim_files=sorted(p.name for p in victim_dir.iterdir()),
        )
        yield results, host, elapsed
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        secret_proc.kill()
        secret_proc.wait()
        for listener in (tcp, unix, abstract):
            listener.close()
        shutil.rmtree(victim_dir, ignore_errors=True)
        shutil.rmtree(unix_dir, ignore_errors=True)
        for stray in (
            Path("/tmp/balora-escape.txt"),
            Path("/balora-escape.txt"),
            Path("/root/balora-escape.txt"),
            ROOT / "balora-escape.txt",
        ):
            stray.unlink(missing_ok=True)


def _attempts(result) -> dict:
    line = next(line for line in result.stdout.splitlines() if line.startswith("ATTEMPTS="))
    import ast

    return ast.literal_eval(line[len("ATTEMPTS=") :])


def _no_success(attempts: dict, keys) -> None:
    for key in keys:
        assert not attempts[key].startswith("succeeded"), (key, attempts[key])


def test_every_hostile_program_ran_with_full_isolation_and_left_no_process(contained):
    results, host, elapsed = contained
    if IS_ROOT:
        assert all(r.isolation == FULL_ISOLATION for r in results.values())
        assert len({r.uid for r in results.values()}) == len(results)  # a uid of its own each
        assert {name: pids for name, pids in host["leftovers"].items() if pids} == {}
    assert elapsed < 30


@needs_root
def test_writes_and_deletes_outside_the_work_dir_are_contained(contained):
    results, host, _ = contained
    attempts = _attempts(results["write_delete_outside"])
    assert attempts["inside"] == "succeeded"
    _no_success(attempts, ["create", "overwrite", "remove", "rmtree", "tmp", "root_home", "project"])
    assert host["victim_text"] == "keep me" and host["victim_files"] == ["victim.txt"]
    assert not Path("/balora-escape.txt").exists() and not (ROOT / "balora-escape.txt").exists()
    assert results["write_delete_outside"].status == "failed"


def test_tcp_to_the_host_is_contained(contained):
    results, host, _ = contained
    _no_success(_attempts(results["tcp_to_host"]), ["tcp"])
    assert host["tcp"].connections == 0 and host["tcp"].received == []
    assert results["tcp_to_host"].status == "failed"


@needs_root
def test_unix_sockets_to_the_host_are_contained(contained):
    results, host, _ = contained
    attempts = _attempts(results["unix_sockets_to_host"])
    _no_success(attempts, ["path", "abstract", "datagram"])
    assert host["unix"].connections == 0 and host["abstract"].connections == 0
    assert host["unix"].received == [] and host["abstract"].received == []
    assert results["unix_sockets_to_host"].status == "failed"


@needs_root
def test_host_files_and_host_proc_are_not_visible(contained):
    results, host, _ = contained
    result = results["read_host_files_and_proc"]
    attempts = _attempts(result)
    _no_success(attempts, ["passwd", "project", "shared_data", "host_pid_cmdline"])
    assert SECRET not in result.stdout and "root:x:0:0" not in result.stdout
    assert len(attempts["proc_pids"]) <= 3  # its own PID namespace: checker, program (+ a child)
    assert set(attempts["root_listing"]) <= {
        "dev",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "root",
        "tmp",
        "usr",
        "work",
        "opt",
        "home",
    }
    assert "etc" not in attempts["root_listing"]
    assert result.status == "failed"


def test_secrets_in_the_environment_are_not_visible(contained):
    results, _, _ = contained
    result = results["secrets_in_environment"]
    assert "ATTEMPTS=" in result.stdout
    assert (
        SECRET not in result.stdout
        and "OPENAI_API_KEY" not in result.stdout
        and "HF_TOKEN" not in result.stdout
    )
    assert result.status == "failed"


@needs_root
def test_fork_bombs_are_contained_per_sample(contained):
    results, _, _ = contained
    for name in ("fork_bomb", "fork_bomb_beside"):
        assert results[name].status in ("timeout", "failed")
    beside = results["correct_beside_fork_bombs"]
    assert beside.status == "passed", (
        beside.reason + beside.stderr
    )  # forked 7 and started 6 threads while the bombs ran
    assert "BlockingIOError" not in beside.stderr


def test_memory_endless_loop_and_huge_output_are_contained(contained):
    results, _, _ = contained
    assert results["memory_10gb"].status == "failed" and "MemoryError" in results["memory_10gb"].stderr
    assert results["endless_loop_with_setsid_child"].status == "timeout"
    assert results["endless_loop_with_setsid_child"].wall_s < 6
    assert results["huge_output"].status in ("failed", "timeout")
    assert len(results["huge_output"].stdout) <= 70 * 1024


@needs_root
def test_background_process_dies_with_its_sample(contained):
    results, host, _ = contained
    assert results["background_daemon"].status == "failed"
    assert host["daemon_file"] is False and host["leftovers"]["background_daemon"] == []


def test_killing_the_parents_fails_only_itself(contained):
    results, _, _ = contained
    assert results["kill_the_parents"].status == "failed"
    assert (
        os.getpid() > 0 and results["correct_beside_fork_bombs"].status == "passed"
    )  # the evaluator lives on


@needs_root
def test_killing_the_checker_cannot_forge_a_pass():
    program = "import os, signal\ntry:\n    os.kill(1, signal.SIGKILL)\nexcept OSError as err:\n    print('refused', err)\n"
    program += "def add(a, b):\n    return 0\n"
    task, _ = code.load_mbpp(str(FIXTURES / "mbpp_tiny.jsonl"))
    source, checks = code.mbpp_program(task[0], program)
    result = run_program(source, SHORT, checks=checks)
    assert "refused" in result.stdout and result.status == "failed"


def test_signal_to_the_evaluator_process_group_is_contained():
    """The sandbox runs in its own session: a program signalling its process group cannot reach pytest."""
    before = signal.getsignal(signal.SIGTERM)
    result = run_program("import os, signal\nos.killpg(0, signal.SIGTERM)\n", SHORT)
    assert result.status == "failed" and signal.getsignal(signal.SIGTERM) == before
