"""Fine-tune a causal LM with BA-LoRA, LoRA, PiSSA or full FT: `balora.cli.train_nlg` (`balora-train-nlg`)."""

import sys

from balora.cli.train_nlg import ARGUMENT_CLASSES, cli, main  # noqa: F401 - the command's names, for imports

if __name__ == "__main__":
    sys.exit(cli())
