"""The distributed-launch helper of the tests: a hung launch is killed whole, not left behind."""

import os
import sys
import time

import pytest
from helpers import _run_in_own_group


def test_a_timed_out_launch_kills_its_child_processes_too(tmp_path):
    pid_file = tmp_path / "child.pid"
    # A "launcher" that starts a long-lived "rank" and waits for it, like torch.distributed.run.
    launcher = (
        "import subprocess, sys; child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); child.wait()"
    )
    with pytest.raises(AssertionError, match="did not finish in 3 s; all its processes were killed"):
        _run_in_own_group([sys.executable, "-c", launcher], dict(os.environ), tmp_path, timeout=3)
    child = int(pid_file.read_text())
    for _ in range(50):  # the kill is asynchronous: give the kernel a moment to reap it
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the child {child} of the timed-out launch is still running")


def test_a_finished_launch_returns_its_output():
    proc = _run_in_own_group(
        [sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], dict(os.environ), "."
    )
    assert (proc.returncode, proc.stdout.strip()) == (3, "out")
