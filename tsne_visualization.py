"""t-SNE of saved last-hidden-layer features (the paper's feature-space figure).

The command `balora-tsne` (balora/cli/tsne.py), same flags and output.
"""

import sys

from balora.cli.tsne import cli, main  # noqa: F401 - main: the command's function, for imports

if __name__ == "__main__":
    sys.exit(cli())
