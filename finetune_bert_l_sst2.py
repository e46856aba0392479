"""BERT-large on SST-2 with the regularisers (the paper's quick start): `balora.cli.finetune_bert_l_sst2`."""

import sys

from balora.cli.finetune_bert_l_sst2 import cli, main, preset_argv  # noqa: F401 - the command's names, for imports

if __name__ == "__main__":
    sys.exit(cli())
