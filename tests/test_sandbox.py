"""balora.eval.sandbox basics: verdicts from the checker, plain data across the pipe, isolation levels.

The hostile programs (escapes, forged passes, disturbing other samples) are in test_sandbox_hostile.py.
"""

import math
import os

import pytest

from balora.eval.sandbox import (
    FULL_ISOLATION,
    Checks,
    NotPlainData,
    SandboxLimits,
    WeakIsolationError,
    decode_plain,
    encode_plain,
    require_isolation,
    run_program,
    run_programs,
)

IS_ROOT = os.geteuid() == 0
FAST = SandboxLimits(timeout_s=5, cpu_s=5)
SQUARE = Checks(setup="", code="assert f(2) == 4\nassert f(-3) == 9\n", candidates=("f",))


def test_plain_program_completes_and_reports_full_isolation_as_root():
    result = run_program("import json, collections\nprint(sum(range(10)))\n", FAST)
    assert result.status == "completed" and result.stdout.strip() == "45"
    assert not result.passed  # without checks nothing "passes": exit status 0 is not a verdict
    if IS_ROOT:
        assert {k: result.isolation[k] for k in FULL_ISOLATION} == FULL_ISOLATION


def test_exit_status_is_reported_but_never_a_pass():
    assert run_program("assert 1 + 1 == 3\n", FAST).status == "failed"
    result = run_program("raise SystemExit(2)\n", FAST)
    assert result.status == "failed" and result.returncode == 2


def test_checks_pass_only_when_they_run_to_their_end():
    assert run_program("def f(x):\n    return x * x\n", FAST, checks=SQUARE).status == "passed"
    wrong = run_program("def f(x):\n    return 4\n", FAST, checks=SQUARE)
    assert wrong.status == "failed" and "AssertionError" in wrong.reason
    missing = run_program("def g(x):\n    return x * x\n", FAST, checks=SQUARE)
    assert missing.status == "failed" and "NameError" in missing.reason


def test_exceptions_of_the_program_reach_the_checks_as_builtin_types():
    checks = Checks(
        setup="",
        code="try:\n    f(0)\nexcept ZeroDivisionError:\n    pass\nelse:\n    raise AssertionError\n",
        candidates=("f",),
    )
    assert run_program("def f(x):\n    return 1 / x\n", FAST, checks=checks).status == "passed"
    assert run_program("def f(x):\n    return 1\n", FAST, checks=checks).status == "failed"


def test_prints_of_the_program_are_captured_and_do_not_matter():
    result = run_program("def f(x):\n    print('called', x)\n    return x * x\n", FAST, checks=SQUARE)
    assert result.status == "passed" and "called 2" in result.stdout


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(10**30),
        1.5,
        math.inf,
        2 - 3j,
        "é",
        b"\x00\xff",
        [1, (2, 3)],
        {"a": {1, 2}, (1, 2): [None]},
        set(),
        (),
    ],
)
def test_plain_data_round_trips_with_exact_types(value):
    back = decode_plain(encode_plain(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, dict):
        assert all(type(k) is type(k2) for k, k2 in zip(value, back, strict=True))


@pytest.mark.parametrize(
    "value",
    [
        frozenset(),
        bytearray(b"x"),
        range(3),
        object(),
        [iter([])],
        {"k": type("Obj", (), {})()},
    ],
)
def test_values_that_are_not_plain_data_are_refused(value):
    with pytest.raises(NotPlainData):
        encode_plain(value)


def test_subclasses_of_plain_types_cross_as_their_base_type_data():
    """Counter/OrderedDict/defaultdict/namedtuple/IntEnum results compare with literals as in plain Python;
    what crosses is read through the base type, so an overridden __iter__ or __eq__ does not cross."""
    import collections
    import enum

    class Lying(list):
        def __iter__(self):
            return iter(["forged"])

        def __eq__(self, other):
            return True

    point = collections.namedtuple("Point", "x y")
    cases = [
        (collections.Counter("aab"), {"a": 2, "b": 1}),
        (collections.OrderedDict(b=1, a=2), {"b": 1, "a": 2}),
        (collections.defaultdict(list, {1: [2]}), {1: [2]}),
        (point(1, 2.5), (1, 2.5)),
        (enum.IntEnum("E", "A")(1), 1),
        (Lying([1, 2]), [1, 2]),
    ]
    for value, expected in cases:
        back = decode_plain(encode_plain(value))
        assert back == expected and type(back) is type(expected)


def test_counter_result_passes_a_dict_literal_check_and_a_lying_subclass_fails():
    # MBPP 40 / 88: the reference solutions return collections.Counter, the tests compare with dicts.
    counter = "from collections import Counter\ndef f(x):\n    return Counter({x: x * x})\n"
    lying = "class Anything(dict):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Anything()\n"
    dict_check = Checks(setup="", code="assert f(2) == {2: 4}\n", candidates=("f",))
    assert run_program(counter, FAST, checks=dict_check).status == "passed"
    forged = run_program(lying, FAST, checks=dict_check)
    assert forged.status == "failed" and "AssertionError" in forged.reason


def test_malformed_values_from_the_program_are_refused():
    for obj in (
        [1, 2],
        {"t": "list"},
        {"t": "code", "v": "x"},
        {"t": "set", "v": [{"t": "list", "v": []}]},
        {"t": "dict", "v": [[1]]},
        {"t": "complex", "v": ["1", 2]},
    ):
        with pytest.raises(NotPlainData):
            decode_plain(obj)
    deep = None
    for _ in range(150):
        deep = {"t": "list", "v": [deep]}
    with pytest.raises(NotPlainData):
        decode_plain(deep)


def test_run_programs_keeps_order_and_pairs_checks():
    results = run_programs(
        [f"def f(x):\n    return x * {i}\n" for i in range(4)],
        FAST,
        max_workers=3,
        checks=[Checks("", f"assert f(2) == {2 * i}\n", ("f",)) for i in range(4)],
    )
    assert [r.status for r in results] == ["passed"] * 4
    with pytest.raises(ValueError, match="checks"):
        run_programs(["pass"], FAST, checks=[])


def test_weaker_isolation_is_refused_unless_accepted():
    if IS_ROOT:
        full = require_isolation(allow_weak=False)
        assert {k: full[k] for k in FULL_ISOLATION} == FULL_ISOLATION
    with pytest.raises(WeakIsolationError, match="--allow_weak_isolation"):
        require_isolation(allow_weak=False, namespaces=False)
    weak = require_isolation(allow_weak=True, namespaces=False)
    assert weak["pid_namespace"] is False and weak["filesystem"] == "none"
    assert weak["network"] in ("socket-disabled", "netns")


def test_fallback_without_namespaces_still_grades_and_disables_sockets():
    program = (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "except OSError as err:\n    print('refused', err)\ndef f(x):\n    return x * x\n"
    )
    result = run_program(program, FAST, namespaces=False, checks=SQUARE)
    assert result.status == "passed", result.reason + result.stderr
    assert "refused" in result.stdout
    assert result.isolation["pid_namespace"] is False and result.isolation["filesystem"] == "none"
    forged = run_program("import os\nos._exit(0)\n", FAST, namespaces=False, checks=SQUARE)
    assert forged.status == "failed"
    assert (
        run_program("while True: pass\n", SandboxLimits(timeout_s=1, cpu_s=30), namespaces=False).status
        == "timeout"
    )


def test_cpu_limit_reports_timeout():
    result = run_program("while True: pass\n", SandboxLimits(timeout_s=20, cpu_s=1))
    assert result.status == "timeout" and "CPU" in result.reason
    assert result.wall_s < 10


@pytest.mark.parametrize(
    "program",
    [
        "def f(x):\n    return object()\n",
        "def f(x):\n    import os\n    os._exit(0)\n",
        "def f(x):\n    return 10 ** 5000\n",
    ],
)
def test_checks_that_swallow_exceptions_still_fail_a_forged_answer(program):
    # Tests that catch every exception (`except Exception`) cannot turn a non-plain value, a vanished
    # program or a malformed answer into a pass.
    lenient = Checks(
        setup="",
        code="for x in range(3):\n    try:\n        f(x)\n    except BaseException:\n        pass\n",
        candidates=("f",),
    )
    result = run_program(program, FAST, checks=lenient)
    assert result.status == "failed", result.reason
    assert run_program("def f(x):\n    return x\n", FAST, checks=lenient).status == "passed"


def test_garbage_on_the_answer_channel_or_a_checker_crash_fails_only_that_sample():
    """Bad input: each bad sample fails with one line naming what happened; the others are graded."""
    good = "def f(x):\n    return x * x\n"
    garbage = "import os\ndef f(x):\n    os.write(4, b'\\xff' * 64)\n    return x * x\n"
    bad_json = (
        "import os, struct\ndef f(x):\n    os.write(4, struct.pack('<Q', 5) + b'{\"v\":')\n    return x * x\n"
    )
    crash = Checks(setup="import ctypes\nctypes.string_at(0)\n", code=SQUARE.code, candidates=("f",))
    results = run_programs(
        [good, garbage, bad_json, good, good],
        FAST,
        max_workers=3,
        checks=[SQUARE, SQUARE, SQUARE, crash, SQUARE],
    )
    assert [r.status for r in results] == ["passed", "failed", "failed", "failed", "passed"]
    for result in results[1:4]:
        assert result.reason and "\n" not in result.reason, result.reason
    assert "f() sent a malformed answer" in results[1].reason
    assert "f() sent a malformed answer" in results[2].reason
    assert results[3].reason == "the checker ended without a verdict (killed by SIGSEGV)"


def test_the_worker_is_a_fresh_interpreter_with_only_the_program():
    """Not a fork of the checker: python -I -S with the worker's code in argv, a clean environment,
    fds 0-4 only, no module of the checker or of the project loaded (nor json and re: start-up stays cheap)."""
    probe = (
        "import os, sys\n"
        "print('FLAGS', sys.flags.isolated, sys.flags.no_site)\n"
        "print('FDS', sorted(int(fd) for fd in os.listdir('/proc/self/fd')))\n"
        "print('ENV', sorted(os.environ))\n"
        "print('MODULES', sorted(m for m in sys.modules if 'balora' in m or 'sandbox' in m or m in ('json', 're')))\n"
        "print('PPID', os.getppid())\n"
    )
    result = run_program(probe, FAST)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["FLAGS"] == "1 1"
    assert lines["FDS"] == "[0, 1, 2, 3, 4, 5]"  # 5: the listing's own descriptor
    assert lines["ENV"] == repr(
        sorted(
            [
                "HOME",
                "LANG",
                "PATH",
                "PYTHONDONTWRITEBYTECODE",
                "PYTHONHASHSEED",
                "PYTHONIOENCODING",
                "TMPDIR",
            ]
            + [k for k in ("LC_ALL", "TZ") if k in os.environ]
        )
    )
    assert lines["MODULES"] == "[]"
    if IS_ROOT:
        assert lines["PPID"] == "1"  # the checker, PID 1 of the run's PID namespace


@pytest.mark.parametrize("program", ["x = '\udc80'\n", "def f(x):\n    return x * x\n\x00\n"])
def test_a_program_that_is_not_valid_text_fails_only_itself(program):
    """A lone surrogate (cannot be written as UTF-8) or a NUL byte: that sample fails, no set-up error."""
    result = run_program(program, FAST, checks=SQUARE)
    assert result.status == "failed" and "ended before its checks finished" in result.reason


@pytest.mark.skipif(not IS_ROOT, reason="memory cgroups need root")
def test_a_named_cgroup_is_used_and_a_wrong_one_is_refused(monkeypatch, tmp_path):
    import balora.eval.sandbox as sandbox

    found = sandbox._find_memory_cgroup()
    if found is None:
        pytest.skip("no memory cgroup this process may create children in")
    monkeypatch.setenv(sandbox.CGROUP_ENV, found[1])
    assert sandbox._find_memory_cgroup() == found
    monkeypatch.setenv(sandbox.CGROUP_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="BALORA_SANDBOX_CGROUP=.* is not a cgroup directory"):
        sandbox._find_memory_cgroup()


@pytest.mark.parametrize(
    "value",
    [
        {"t": "list", "v": [1, -2.5, None, True, 'é\u2028"\\', float("inf"), -float("inf"), 10**40]},
        {"value": {"t": "dict", "v": [["a", {"t": "bytes", "v": "00ff"}]]}},
        {"ready": True},
    ],
)
def test_the_pipe_json_is_the_json_package_s(value):
    """The sandbox's processes speak JSON through `_json` directly (no `json` import at start-up):
    the same text as json.dumps, and the same values back as json.loads."""
    import json

    from balora.eval import sandbox_worker

    assert sandbox_worker.dumps(value) == json.dumps(value)
    assert sandbox_worker.loads(json.dumps(value)) == json.loads(json.dumps(value))
    nan = sandbox_worker.loads(json.dumps({"x": float("nan")}))["x"]
    assert math.isnan(nan)
    for malformed in ("", "{", '{"a": 1} x', "[" * 100000, '{"a": "\\ud800"', "NaNx", "'a'"):
        with pytest.raises((ValueError, RecursionError)):
            sandbox_worker.loads(malformed)
