"""Hostile programs against balora.eval.sandbox, as an attacker would write them.

Every case asserts containment (the host, the evaluator and other samples are untouched) and the
verdict (a hostile sample never passes). Real subprocesses, a real TCP server on 127.0.0.1 and real
Unix-socket listeners (a world-writable path under /tmp and the abstract namespace); no mocks.
The containment programs all run at once (module fixture), as an evaluation runs them.
"""

import json
import os
import secrets
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
from balora.eval.sandbox import FULL_ISOLATION, Checks, SandboxLimits, run_program

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
        assert all({k: r.isolation[k] for k in FULL_ISOLATION} == FULL_ISOLATION for r in results.values())
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


# --- 3. the program never holds its tests -------------------------------------------------------------

MARKER = "zqxjchecks"  # the program knows this prefix only; the checks hold MARKER + 32 secret hex digits
SEARCH_FOR_THE_CHECKS = r"""
import gc, os, re, sys
PATTERN = re.compile(rb"zqxjchecks[0-9a-f]{32}-[a-z]+")
found, searched = set(), {"self_mem": 0, "other_mem": 0, "fds": 0, "files": 0}
canary = "zqxjchecks" + "f" * 32 + "-canary"  # built here: the search must find it in its own memory

def scan(data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    found.update(m.decode() for m in PATTERN.findall(data))

def scan_object(obj, depth=0):
    if depth > 4:
        return
    if isinstance(obj, (str, bytes, bytearray)):
        scan(obj)
    elif isinstance(obj, dict):
        for key, value in list(obj.items()):
            scan_object(key, depth + 1)
            scan_object(value, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for value in list(obj):
            scan_object(value, depth + 1)
    elif isinstance(obj, type(scan.__code__)):
        for value in obj.co_consts:
            scan_object(value, depth + 1)
    elif isinstance(obj, type(scan)):
        scan_object(obj.__code__, depth + 1)

def read_memory(pid):
    total = 0
    for name in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as handle:
                scan(handle.read())
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/maps") as handle:
            maps = handle.read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", 0)
    except OSError:
        return 0
    with mem:
        for line in maps:
            addresses, perms = line.split()[:2]
            if perms[0] != "r" or "[vvar" in line or "[vsyscall" in line:
                continue
            start, end = (int(x, 16) for x in addresses.split("-"))
            tail = b""
            for offset in range(start, end, 1 << 20):
                try:
                    mem.seek(offset)
                    chunk = mem.read(min(1 << 20, end - offset))
                except (OSError, ValueError, OverflowError):
                    break
                scan(tail + chunk)
                tail, total = chunk[-80:], total + len(chunk)
    return total

frame, frames = sys._getframe(), 0
while frame is not None:
    scan_object(frame.f_locals)
    scan_object(frame.f_globals)
    scan_object(frame.f_code)
    frame, frames = frame.f_back, frames + 1
searched["frames"] = frames
objects = gc.get_objects()
for obj in objects:
    scan_object(obj, 3)
searched["gc_objects"] = len(objects)
del objects
for module in list(sys.modules.values()):
    scan_object(getattr(module, "__dict__", {}), 2)
searched["modules"] = len(sys.modules)
searched["self_mem"] = read_memory("self")
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        searched["other_mem"] += read_memory(pid)
for fd in range(256):
    try:
        os.fstat(fd)
        handle = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        continue
    try:
        scan(os.read(handle, 64 << 20))
        searched["fds"] += 1
    except OSError:
        pass
    os.close(handle)
for top in {os.getcwd(), os.path.dirname(os.getcwd()), "/tmp", "/work", "/"}:
    for directory, subdirs, files in os.walk(top):
        subdirs[:] = [d for d in subdirs if directory.count("/") < 3 and d not in ("proc", "sys", "usr", "lib", "lib64", "root", "dev")]
        for name in files:
            try:
                with open(os.path.join(directory, name), "rb") as handle:
                    scan(handle.read(16 << 20))
                searched["files"] += 1
            except OSError:
                pass
print("SEARCHED=" + repr(searched))
print("FOUND=" + repr(sorted(found)), flush=True)

def f(x):
    return next((m for m in sorted(found) if m.endswith("-expected")), None)
"""


def _planted_checks() -> tuple[Checks, str]:
    """Checks holding a secret marker in their setup, their tests, their data and a reference solution."""
    secret = secrets.token_hex(16)
    mark = {part: f"{MARKER}{secret}-{part}" for part in ("setup", "expected", "data", "reference")}
    checks = Checks(
        setup=f"HIDDEN = {mark['setup']!r}\nREFERENCE = 'def f(x):\\n    return {mark['reference']}'\n",
        code=f"assert f(0) == {mark['expected']!r}, 'the answer is not the expected one'\n",
        candidates=("f",),
        data={"inputs": [0], "expected": mark["data"]},
    )
    return checks, secret


def _line(result, key: str):
    import ast

    line = next((line for line in result.stdout.splitlines() if line.startswith(key + "=")), None)
    assert line is not None, (key, result.status, result.reason, result.stdout[-500:], result.stderr[-2000:])
    return ast.literal_eval(line[len(key) + 1 :])


@needs_root
def test_the_program_finds_nothing_of_its_checks_anywhere():
    checks, secret = _planted_checks()
    result = run_program(SEARCH_FOR_THE_CHECKS, SandboxLimits(timeout_s=30, cpu_s=30), checks=checks)
    found, searched = _line(result, "FOUND"), _line(result, "SEARCHED")
    # The search works: it found its own canary and read its own memory, objects, modules, fds.
    assert f"{MARKER}{'f' * 32}-canary" in found
    assert searched["self_mem"] > 4 << 20 and searched["gc_objects"] > 1000 and searched["modules"] > 10
    assert searched["frames"] >= 1 and searched["fds"] >= 1
    # Containment: nothing of the setup, the tests, the data or the reference solution was found.
    assert not [m for m in found if secret in m], found
    assert secret not in result.stdout + result.stderr
    assert result.status == "failed" and "the answer is not the expected one" in result.reason


def test_the_checks_pass_a_program_that_computes_the_answer():
    """The control of the test above: the planted checks pass an honest program."""
    checks, secret = _planted_checks()
    honest = f"def f(x):\n    return {MARKER!r} + {secret!r} + '-expected'\n"
    assert run_program(honest, SHORT, checks=checks).status == "passed"


# --- 4. one memory bound per sample, whatever the mechanism ------------------------------------------

BOUND_MB = 256  # the per-sample memory bound of these tests; each hostile program aims at >= 1 GiB
BOUNDED = SandboxLimits(timeout_s=20, cpu_s=10, memory_mb=BOUND_MB)
NOISE_MB = 128  # host memory other processes of this machine may add while a sample runs

SYSV_SHM = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
SEGMENT = 64 << 20
children = []
for _ in range(4):  # 4 processes x 4 segments x 64 MiB = 1 GiB, each segment touched and held
    pid = os.fork()
    if pid == 0:
        for _ in range(4):
            sid = libc.shmget(0, SEGMENT, 0o1600)
            if sid < 0:
                break
            address = libc.shmat(sid, None, 0)
            if address is None or address == ctypes.c_void_p(-1).value:
                break
            ctypes.memset(address, 1, SEGMENT)
        time.sleep(1.0)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""
MEMFD = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
held, denied = 0, []
for i in range(64):  # 64 x 16 MiB = 1 GiB
    try:
        fd = os.memfd_create(f"m{i}")
    except OSError as err:
        denied.append(err.errno)
        fd = libc.syscall(319 if os.uname().machine == "x86_64" else 279, b"raw", 0)  # memfd_create
        if fd < 0:
            denied.append(ctypes.get_errno())
            continue
    os.write(fd, b"x" * (16 << 20))
    held += 16
print("HELD_MB=" + repr(held))
print("DENIED=" + repr(sorted(set(denied))))
"""
TMPFS_FILES = """
import os
for directory in ("/dev/shm", "/tmp", os.getcwd()):
    for i in range(64):  # 64 x 16 MiB = 1 GiB per directory
        try:
            with open(os.path.join(directory, f"fill-{len(directory)}-{i}"), "wb") as handle:
                handle.write(b"x" * (16 << 20))
        except OSError:
            break
held = sum(e.stat().st_blocks * 512 for e in os.scandir(os.getcwd()) if e.is_file())
print("HELD_MB=" + repr(held >> 20))
"""
INODE_FLOOD = """
created = 0
try:
    for i in range(1_000_000):  # an unbounded flood costs ~1 GB of kernel memory
        open(f"e{i}", "w").close()
        created += 1
except OSError as err:
    print("STOPPED=" + repr(err.errno))
print("INODES=" + repr(created))
"""
SYSV_MESSAGE_QUEUES = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
queues = 0
for _ in range(10_000):  # 10,000 queues x 16 KiB of messages = 160 MiB of kernel memory unbounded
    qid = libc.msgget(0, 0o1600)
    if qid < 0:
        break
    queues += 1
    message = ctypes.create_string_buffer(b"\\1" * 8 + b"x" * 4096)  # mtype 1, then the text
    while libc.msgsnd(qid, message, 4096, 0o4000) == 0:  # IPC_NOWAIT: until the queue is full
        pass
print("QUEUES=" + repr(queues))
"""
ANONYMOUS_IN_PROCESSES = """
import os, time
children = []
for _ in range(8):  # 8 processes x 128 MiB, each under its own RLIMIT_AS
    pid = os.fork()
    if pid == 0:
        block = b"x" * (128 << 20)  # touched
        time.sleep(1.5)
        os._exit(0)
    children.append(pid)
survived = sum(os.WIFEXITED(os.waitpid(pid, 0)[1]) for pid in children)
print("HELD_MB=" + repr(survived * 128))
"""


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as handle:
        return {line.split(":")[0]: int(line.split()[1]) for line in handle}


def _run_measured(source: str, cgroup: bool = True):
    """Run one hostile sample (graded as MBPP `add`) while polling the host's /proc/meminfo: the
    result and the largest growth of shared memory (tmpfs, SysV, memfd) and kernel slab, in MiB."""
    mbpp, _ = code.load_mbpp(str(FIXTURES / "mbpp_tiny.jsonl"))
    _, checks = code.mbpp_program(mbpp[0], "")
    before = _meminfo()
    peaks = dict(before)
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            now = _meminfo()
            for key in ("Shmem", "Slab"):
                peaks[key] = max(peaks[key], now[key])
            time.sleep(0.01)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        result = run_program(source + WRONG.format(f="add"), BOUNDED, checks=checks, cgroup=cgroup)
    finally:
        stop.set()
        thread.join()
    growth = {key: (peaks[key] - before[key]) / 1024 for key in ("Shmem", "Slab")}
    return result, growth


@needs_root
@pytest.mark.parametrize("cgroup", [True, False], ids=["with-cgroup", "caps-alone"])
def test_sysv_shared_memory_is_bounded_per_sample(cgroup):
    result, growth = _run_measured(SYSV_SHM, cgroup)
    assert growth["Shmem"] < BOUND_MB + NOISE_MB, growth  # unbounded: 1024 MiB
    assert result.status == "failed"


@needs_root
def test_memfd_is_denied():
    result, growth = _run_measured(MEMFD)
    assert _line(result, "HELD_MB") == 0 and _line(result, "DENIED") == [1]  # EPERM from the seccomp filter
    assert growth["Shmem"] < NOISE_MB, growth
    assert result.status == "failed"


@needs_root
@pytest.mark.parametrize("cgroup", [True, False], ids=["with-cgroup", "caps-alone"])
def test_tmpfs_files_are_bounded_per_sample(cgroup):
    result, growth = _run_measured(TMPFS_FILES, cgroup)
    assert _line(result, "HELD_MB") <= BOUNDED.workdir_mb
    assert growth["Shmem"] < BOUNDED.workdir_mb + NOISE_MB, growth
    assert result.status == "failed"


@needs_root
@pytest.mark.parametrize("cgroup", [True, False], ids=["with-cgroup", "caps-alone"])
def test_inode_flood_is_bounded_per_sample(cgroup):
    result, growth = _run_measured(INODE_FLOOD, cgroup)
    assert _line(result, "INODES") <= BOUNDED.workdir_inodes
    assert growth["Slab"] < NOISE_MB, growth  # unbounded: ~1 GB of slab for 1 M inodes
    assert result.status == "failed"


@needs_root
def test_sysv_message_queues_are_bounded_per_sample():
    result, growth = _run_measured(SYSV_MESSAGE_QUEUES, cgroup=False)
    assert _line(result, "QUEUES") <= 16  # kernel.msgmni of the sample's IPC namespace
    assert growth["Slab"] < NOISE_MB, growth
    assert result.status == "failed"


@needs_root
def test_anonymous_memory_of_all_processes_is_bounded_by_the_cgroup():
    result, _ = _run_measured(ANONYMOUS_IN_PROCESSES)
    if result.isolation.get("memory") != "cgroup":
        pytest.skip("no memory cgroup here: anonymous memory is bounded per process only (RLIMIT_AS)")
    assert _line(result, "HELD_MB") <= BOUND_MB  # unbounded: 8 x 128 MiB held at once
    assert result.peak_memory_mb is not None and result.peak_memory_mb <= BOUND_MB
    assert result.status == "failed" and "memory limit of 256 MiB" in result.reason
