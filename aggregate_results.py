"""Turn result folders into the paper's tables (Markdown + LaTeX + JSON), mean ± std over seeds.

The command `balora-aggregate` (balora/cli/aggregate.py), same flags and output.
"""

import sys

from balora.cli.aggregate import cli, main  # noqa: F401 - main: the command's function, for imports

if __name__ == "__main__":
    sys.exit(cli())
