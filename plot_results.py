"""Regenerate the paper's figures from result folders (PDF + PNG).

The command `balora-plot` (balora/cli/plot.py), same flags and output.
"""

import sys

from balora.cli.plot import cli, main  # noqa: F401 - main: the command's function, for imports

if __name__ == "__main__":
    sys.exit(cli())
