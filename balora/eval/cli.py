"""Console entry points `balora-eval-<benchmark>`: the eval/ command lines under installed names.

eval/ is a folder of scripts, not a package (an importable eval/math.py would shadow the standard
`math` module), so each entry point runs its script by path, as `python eval/<benchmark>.py` does:
same flags, same output, same exit status on errors. The scripts live in the source checkout beside
the balora package, so these entry points need an editable install (`pip install -e .`); without the
checkout they say so and exit 2.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

# <checkout>/balora/eval/cli.py -> <checkout>/eval
EVAL_DIR = Path(__file__).resolve().parents[2] / "eval"
BENCHMARKS = ("gsm8k", "gsm8k_nll", "math", "humaneval", "mbpp", "mt_bench")


def script_path(benchmark: str) -> Path:
    """The eval/ script of `benchmark` (one of BENCHMARKS)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    return EVAL_DIR / f"{benchmark}.py"


def run_script(benchmark: str, argv: list[str] | None = None) -> int:
    """Run eval/<benchmark>.py as `__main__` with `argv` (default: this process's arguments).

    Returns:
        0 when the script finishes; 2 when the script is not there. The script's own errors propagate
        (a SystemExit keeps its status; other exceptions keep their traceback), as on the command line.
    """
    path = script_path(benchmark)
    if not path.is_file():
        print(
            f"error: {path} not found: balora-eval-{benchmark.replace('_', '-')} runs the eval/ scripts of "
            f"a source checkout; install it with `pip install -e <checkout>` or run "
            f"`python eval/{benchmark}.py` there",
            file=sys.stderr,
        )
        return 2
    saved_argv = sys.argv
    sys.argv = [str(path), *(sys.argv[1:] if argv is None else argv)]
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = saved_argv
    return 0


def run_gsm8k() -> int:
    """`balora-eval-gsm8k`: eval/gsm8k.py."""
    return run_script("gsm8k")


def run_gsm8k_nll() -> int:
    """`balora-eval-gsm8k-nll`: eval/gsm8k_nll.py."""
    return run_script("gsm8k_nll")


def run_math() -> int:
    """`balora-eval-math`: eval/math.py."""
    return run_script("math")


def run_humaneval() -> int:
    """`balora-eval-humaneval`: eval/humaneval.py."""
    return run_script("humaneval")


def run_mbpp() -> int:
    """`balora-eval-mbpp`: eval/mbpp.py."""
    return run_script("mbpp")


def run_mt_bench() -> int:
    """`balora-eval-mt-bench`: eval/mt_bench.py."""
    return run_script("mt_bench")
