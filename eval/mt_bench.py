"""MT-Bench: two-turn answers in the training format, judged by any OpenAI-compatible endpoint.

The command `balora-eval-mt-bench` (balora/cli/eval_mt_bench.py) run from a checkout: same flags, output and exit
status. `python eval/mt_bench.py --help` lists the flags.
"""

import sys

if __name__ == "__main__":
    # Python puts eval/ first on sys.path, where eval/math.py would stand in for the standard `math`
    # module in every import: the command runs as the package's module instead, and -P keeps the
    # working directory (perhaps eval/) off the path too.
    import os

    os.execv(sys.executable, [sys.executable, "-P", "-m", "balora.cli.eval_mt_bench", *sys.argv[1:]])

from balora.cli.eval_mt_bench import cli, main  # noqa: E402, F401 - the command's names, for imports
