"""MATH accuracy (%) under the paper's protocol, a lenient reading and Math-Verify beside it (eval/README.md).

The command `balora-eval-math` (balora/cli/eval_math.py) run from a checkout: same flags, output and exit
status. `python eval/math.py --help` lists the flags.
"""

import sys

if __name__ == "__main__":
    # Python puts eval/ first on sys.path, where eval/math.py would stand in for the standard `math`
    # module in every import: the command runs as the package's module instead, and -P keeps the
    # working directory (perhaps eval/) off the path too.
    import os

    os.execv(sys.executable, [sys.executable, "-P", "-m", "balora.cli.eval_math", *sys.argv[1:]])

from balora.cli.eval_math import cli, main  # noqa: E402, F401 - the command's names, for imports
