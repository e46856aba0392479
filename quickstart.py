"""CPU quick start, LoRA vs PiSSA vs BA-LoRA on a small model: `balora.cli.quickstart` (`balora-quickstart`)."""

import sys

from balora.cli.quickstart import cli, main  # noqa: F401 - the command's names, for imports

if __name__ == "__main__":
    sys.exit(cli())
