"""Teacher-forced NLL (nats per token) of the GSM8K reference solutions under a model (lower is better).

The command `balora-eval-gsm8k-nll` (balora/cli/eval_gsm8k_nll.py) run from a checkout: same flags, output and exit
status. `python eval/gsm8k_nll.py --help` lists the flags.
"""

import sys
from pathlib import Path

# Python puts this file's folder first on sys.path; the checkout root takes its place, so that this
# checkout's balora is imported and eval/math.py never stands in for the standard `math` module.
if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from balora.cli.eval_gsm8k_nll import cli, main  # noqa: E402, F401 - main: the command's function, for imports

if __name__ == "__main__":
    sys.exit(cli())
