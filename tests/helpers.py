"""Helpers shared by several test files (import with `from helpers import ...`)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVAL_FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def load_script(name: str):
    """Import eval/<name>.py by path: putting eval/ on sys.path would shadow stdlib `math`."""
    spec = importlib.util.spec_from_file_location(f"eval_{name}", ROOT / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
