"""Write the flat GLUE configs of configs/glue/ (the recipes: balora/repro/glue_configs.py).

    python scripts/generate_glue_configs.py            # rewrite configs/glue/*.yaml
    python scripts/generate_glue_configs.py --check    # exit 1, naming them, if committed files differ

`python -m balora.repro.studies --write-configs` / `--check` does the same and checks the registry's
configs besides (every config a study plans exists, every committed config belongs to a study).
"""

import sys

from balora.repro.glue_configs import main

if __name__ == "__main__":
    sys.exit(main())
