"""Fine-tune a GLUE classifier with any method of the NLU table: `balora.cli.finetune_glue` (`balora-finetune-glue`)."""

import sys

from balora.cli.finetune_glue import ARGUMENT_CLASSES, cli, main  # noqa: F401 - the command's names, for imports

if __name__ == "__main__":
    sys.exit(cli())
