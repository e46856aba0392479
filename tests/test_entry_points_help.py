"""`--help` of every entry point exits 0 with a usage line and a description, and starts nothing.

Entry points are found by globbing, so a new script is covered without editing this file.
"""

import os
import re
import runpy
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOP_LEVEL = (
    "train_nlg.py",
    "finetune_glue.py",
    "finetune_bert_l_sst2.py",
    "tsne_visualization.py",
    "quickstart.py",
    "aggregate_results.py",
    "plot_results.py",
)
# Files the globs find that are not command lines, and why.
NOT_ENTRY_POINTS = {}
# Shims that exec a new interpreter (`python -P -m balora.cli.eval_<name>`, eval/*.py) whose exec runs
# for real here; the other shims' exec runs its command line in the forked child (_exec_in_this_process).
REAL_EXEC = {"eval/gsm8k.py"}
# Entry points whose --help is not implemented yet: strict xfail, so the test fails once it is (remove
# the entry then).
MISSING_HELP = {}


def entry_points() -> list[str]:
    found = [*TOP_LEVEL]
    for pattern in ("eval/*.py", "benchmarks/*.py", "scripts/*.py", "scripts/*.sh"):
        found += sorted(str(p.relative_to(REPO)) for p in REPO.glob(pattern) if not p.name.startswith("_"))
    return [p for p in found if p not in NOT_ENTRY_POINTS]


def _env(scratch: Path) -> dict[str, str]:
    # A script that starts setting up a virtual environment fails at once on PYTHON=false and leaves
    # the VENV folder behind; a sweep that starts a run writes under OUTPUTS_DIR / RESULTS_DIR.
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHON": "false",
        "VENV": str(scratch / "venv"),
        "OUTPUTS_DIR": str(scratch / "outputs"),
        "RESULTS_DIR": str(scratch / "results"),
        "OUT_DIR": str(scratch / "out"),
        "PY": sys.executable,
    }


def _python_help(path: str, scratch: Path) -> subprocess.CompletedProcess:
    """`python <path> --help` in a forked child of this process.

    The child runs the file as __main__ with the argv, sys.path[0], cwd and environment of a command
    line; forking after torch/transformers are imported saves their ~5 s import per script. A shim that
    execs `python -P -m <module>` (eval/*.py) has that command line run in the child too, except those in
    REAL_EXEC, whose exec starts a new interpreter as on a command line.
    """
    out, err = scratch.parent / f"{scratch.name}.out", scratch.parent / f"{scratch.name}.err"
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            with open(out, "w") as stdout, open(err, "w") as stderr:
                os.dup2(stdout.fileno(), 1)
                os.dup2(stderr.fileno(), 2)
                sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
                os.chdir(REPO)
                os.environ.clear()
                os.environ.update(_env(scratch))
                sys.argv = [path, "--help"]
                sys.path[0] = str((REPO / path).parent)
                if path not in REAL_EXEC:
                    os.execv = _exec_in_this_process
                try:
                    runpy.run_path(str(REPO / path), run_name="__main__")
                    code = 0
                except SystemExit as stop:
                    code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                except BaseException:  # noqa: BLE001 - reported through stderr and the exit status
                    traceback.print_exc()
                sys.stdout.flush()
                sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(
        path, os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()
    )


_REAL_EXECV = os.execv


def _exec_in_this_process(executable: str, argv: list[str]) -> None:
    """os.execv in a --help child: `<this python> -P -m <module> <args>` runs here, as the new interpreter
    would run it (argv, `__main__`, no script folder on sys.path), without its imports; any other command
    line is exec'd."""
    if executable != sys.executable or argv[1:3] != ["-P", "-m"]:
        _REAL_EXECV(executable, argv)
    module = argv[3]
    sys.argv = [module, *argv[4:]]  # run_module puts the module's file in argv[0], as `python -m` does
    del sys.path[0]  # -P: the shim's folder is not on the path
    sys.modules.pop(module, None)  # a fresh __main__, as in a new interpreter
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    raise SystemExit(0)  # exec does not return: the command ran to its end


def _shell_help(path: str, scratch: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", path, "--help"], cwd=REPO, env=_env(scratch), capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def help_outputs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every entry point's --help output and its (empty unless something started) scratch folder."""
    import datasets  # noqa: F401
    import peft  # noqa: F401

    import balora.trainer  # noqa: F401 - the heavy imports, done once before forking

    results = {}
    for path in entry_points():
        scratch = tmp_path_factory.mktemp(re.sub(r"\W", "_", path))
        run = _shell_help if path.endswith(".sh") else _python_help
        results[path] = (run(path, scratch), scratch)
    return results


def _description_lines(text: str) -> list[str]:
    """Lines of prose outside the usage block and the option list."""
    after_usage = text.split("\n\n", 1)[1] if "\n\n" in text else text.split("\n", 1)[-1]
    return [
        line
        for line in after_usage.splitlines()
        if line.strip()
        and not line.startswith((" ", "\t", "-"))
        and not line.rstrip().endswith(":")
        and len(line.split()) >= 3
    ]


def test_entry_points_are_discovered():
    found = entry_points()
    for expected in (
        *TOP_LEVEL,
        "eval/gsm8k.py",
        "benchmarks/overhead.py",
        "scripts/mini.sh",
        "scripts/tsne.sh",
    ):
        assert expected in found
    assert all((REPO / p).is_file() for p in [*found, *NOT_ENTRY_POINTS])
    assert REAL_EXEC <= set(found)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=MISSING_HELP[p]))
        if p in MISSING_HELP
        else p
        for p in entry_points()
    ],
)
def test_help_exits_0_with_usage_and_description(path, help_outputs):
    proc, scratch = help_outputs[path]
    assert proc.returncode == 0, f"{path} --help exited {proc.returncode}: {proc.stderr[-1500:]}"
    assert proc.stdout.lstrip().startswith("usage:"), proc.stdout[:500]
    assert _description_lines(proc.stdout), (
        f"{path} --help has a usage line but no description:\n{proc.stdout}"
    )
    assert not any(scratch.iterdir()), f"{path} --help created {sorted(p.name for p in scratch.iterdir())}"
