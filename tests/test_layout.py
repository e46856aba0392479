"""The package's layering: the algorithm (balora/*.py) imports nothing of the reproduction (balora.repro)
or the evaluation (balora.eval), balora.repro nothing of balora.eval, and nothing imports the commands
(balora.cli) — lazy imports included."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "balora"


def _balora_imports(path: Path) -> set[str]:
    """Every balora module a file imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("balora")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("balora"):
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_algorithm_depends_on_nothing_beside_it():
    core = sorted(PACKAGE.glob("*.py"))
    assert {p.stem for p in core} >= {"regularizers", "_kernels", "adapters", "trainer"}
    for path in core:
        outside = {name for name in _balora_imports(path) if name.startswith(("balora.repro", "balora.eval"))}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_the_reproduction_does_not_depend_on_the_evaluation():
    for path in sorted((PACKAGE / "repro").glob("*.py")):
        evaluation = {name for name in _balora_imports(path) if name.startswith("balora.eval")}
        assert not evaluation, f"repro/{path.name} imports {sorted(evaluation)}"


def test_every_module_is_in_one_of_the_three_layers():
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
    assert modules == {m for m in modules if m.count("/") == 0 or m.startswith(("repro/", "eval/", "cli/"))}


def test_nothing_in_the_package_imports_the_commands():
    """balora/cli/ holds the training commands (they use every layer); no other module imports them."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name != "cli":
            commands = {name for name in _balora_imports(path) if name.startswith("balora.cli")}
            assert not commands, f"{path.relative_to(PACKAGE)} imports {sorted(commands)}"
