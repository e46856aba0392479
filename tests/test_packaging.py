"""The package metadata (pyproject.toml) against the source tree and requirements.txt.

Checked without building or installing anything: the packages pyproject finds cover every package of
balora/, pyproject's dependencies are requirements.txt's pins, every console entry point resolves to a
callable, the scripts' `__main__` blocks are their `cli()`, and every pinned
runtime package is imported somewhere (or is on the allow-list below with the reason).
"""

from __future__ import annotations

import ast
import importlib
import re
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
SCRIPTS = PROJECT["scripts"]

# Pinned in requirements.txt, declared in pyproject's optional dependencies (not needed at run time).
TEST_TOOLS = {"pytest", "ruff"}
# Runtime pins that no module of this repository imports, and why they are pinned anyway.
USED_WITHOUT_IMPORT = {
    "accelerate": "the transformers Trainer runs on it (device placement, gradient accumulation)",
    "deepspeed": "ZeRO-2/3 training through TrainingArguments.deepspeed (configs/deepspeed/*.json)",
    "tensorboard": "the Trainer's metric logger (report_to: tensorboard)",
    "sentencepiece": "transformers' tokenizers of LLaMA-2, Mistral and Gemma",
    "gguf": "transformers' reader of the embedded SmolLM2 GGUF checkpoint (balora.repro.models)",
    "latex2sympy2-extended": "math-verify's LaTeX parser (the MATH grader's second opinion)",
    "tabulate": "pandas' DataFrame.to_markdown (the result tables)",
    "cloudpickle": "submitit's serialisation of a submitted job",
    "tempdir": "imported by evalplus (installed without its declared dependencies)",
    "wget": "imported by evalplus (installed without its declared dependencies)",
    "appdirs": "imported by evalplus (installed without its declared dependencies)",
    "multipledispatch": "imported by evalplus (installed without its declared dependencies)",
    "termcolor": "imported by evalplus (installed without its declared dependencies)",
}
# Folders whose .py files are not code of this repository.
NOT_SOURCE = {".venv", "outputs", "runs", "cache", "__pycache__", ".git"}


def _normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    """{normalised name: version} of `name==version` requirement lines (comments and blanks skipped)."""
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"not an exact pin: {line!r} (pin every requirement as name==version)"
        pins[_normalize(match.group(1))] = match.group(2)
    return pins


REQUIREMENTS = _pins((REPO / "requirements.txt").read_text().splitlines())
RUNTIME_PINS = {name: version for name, version in REQUIREMENTS.items() if name not in TEST_TOOLS}


def _source_files() -> list[Path]:
    """The repository's non-test Python files (package, scripts, eval/, benchmarks/, scripts/)."""
    return sorted(
        p
        for p in REPO.rglob("*.py")
        if not NOT_SOURCE.intersection(p.relative_to(REPO).parts) and p.relative_to(REPO).parts[0] != "tests"
    )


def _packages_found() -> set[str]:
    """The packages setuptools finds with pyproject's [tool.setuptools.packages.find] settings."""
    from setuptools import find_namespace_packages, find_packages

    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    finder = find_namespace_packages if find.get("namespaces", True) else find_packages
    return set(
        finder(
            where=str(REPO / find.get("where", ["."])[0]),
            include=find.get("include", ["*"]),
            exclude=find.get("exclude", []),
        )
    )


def test_packages_cover_every_package_of_balora():
    found = _packages_found()
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "balora").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert "balora" in on_disk
    assert on_disk <= found, f"packages pyproject does not ship: {sorted(on_disk - found)}"
    assert all(name == "balora" or name.startswith("balora.") for name in found), sorted(found)


def test_every_folder_of_balora_with_modules_is_a_regular_package():
    # pyproject finds regular packages; a folder of modules without __init__.py would not be shipped.
    folders = {p.parent for p in (REPO / "balora").rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"add an __init__.py (with a docstring) to: {missing}"


def test_py_modules_are_the_top_level_scripts():
    modules = PYPROJECT["tool"]["setuptools"]["py-modules"]
    for module in modules:
        assert (REPO / f"{module}.py").is_file(), f"py-modules lists {module}, but {module}.py does not exist"
    for target in SCRIPTS.values():
        module = target.split(":")[0]
        assert module.startswith("balora.") or module in modules, f"{target}: {module} is not shipped"


def test_dependencies_are_the_pins_of_requirements_txt():
    declared = _pins(PROJECT["dependencies"])
    assert declared == RUNTIME_PINS, (
        f"pyproject dependencies and requirements.txt differ: only in pyproject "
        f"{ {k: v for k, v in declared.items() if RUNTIME_PINS.get(k) != v} }, only in requirements.txt "
        f"{ {k: v for k, v in RUNTIME_PINS.items() if declared.get(k) != v} }"
    )
    extras = {
        name: version
        for group in PROJECT.get("optional-dependencies", {}).values()
        for name, version in _pins(group).items()
    }
    for tool in TEST_TOOLS & REQUIREMENTS.keys():
        assert extras.get(tool) == REQUIREMENTS[tool], f"{tool}=={REQUIREMENTS[tool]} missing from the extras"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_entry_point_resolves_to_a_callable(name):
    module_name, _, attribute = SCRIPTS[name].partition(":")
    module = importlib.import_module(module_name)
    target = getattr(module, attribute, None)
    assert callable(target), f"{name} = {SCRIPTS[name]}: {attribute} is not a callable of {module_name}"


def test_eval_entry_points_name_existing_scripts():
    from balora.eval import cli

    wired = {target.split(":")[1] for target in SCRIPTS.values() if target.startswith("balora.eval.cli:")}
    assert wired == {f"run_{bench}" for bench in cli.BENCHMARKS}
    for bench in cli.BENCHMARKS:
        assert cli.script_path(bench).is_file(), bench
    assert {p.stem for p in (REPO / "eval").glob("*.py")} == set(cli.BENCHMARKS)


def _handled_errors(nodes: list[ast.stmt]) -> list[str]:
    return sorted(
        ast.unparse(handler.type)
        for node in nodes
        for sub in ast.walk(node)
        if isinstance(sub, ast.Try)
        for handler in sub.handlers
        if handler.type is not None
    )


@pytest.mark.parametrize("module", sorted({t.split(":")[0] for t in SCRIPTS.values() if t.endswith(":cli")}))
def test_script_main_block_is_its_console_entry_point(module):
    """`python <script>.py` and the console command run the same code: the `__main__` block is `sys.exit(cli())`."""
    tree = ast.parse((REPO / f"{module}.py").read_text())
    assert any(isinstance(node, ast.FunctionDef) and node.name == "cli" for node in tree.body)
    main_block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and ast.unparse(node.test) in ('__name__ == "__main__"', "__name__ == '__main__'")
    )
    assert [ast.unparse(node) for node in main_block.body] == ["sys.exit(cli())"]


def _imported_top_level_names() -> set[str]:
    names = set()
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_pinned_runtime_package_is_used():
    import_to_dists = metadata.packages_distributions()
    used = set()
    for name in _imported_top_level_names():
        used.update(_normalize(dist) for dist in import_to_dists.get(name, []))
        used.add(_normalize(name))  # a distribution not installed here: its import name is usually its name
    unused = sorted(set(RUNTIME_PINS) - used - set(USED_WITHOUT_IMPORT))
    assert not unused, (
        f"pinned but never imported: {unused}; drop the pin, or add it to USED_WITHOUT_IMPORT "
        f"with the reason it is needed"
    )
    stale = sorted(name for name in USED_WITHOUT_IMPORT if name not in RUNTIME_PINS or name in used)
    assert not stale, f"USED_WITHOUT_IMPORT entries that are not pinned, or are imported after all: {stale}"


def test_eval_entry_point_runs_its_script_as_main_with_the_arguments(tmp_path, monkeypatch, capsys):
    from balora.eval import cli

    (tmp_path / "gsm8k.py").write_text(
        "import sys\nif __name__ == '__main__':\n    print('ran', sys.argv[1:])\n"
    )
    monkeypatch.setattr(cli, "EVAL_DIR", tmp_path)
    monkeypatch.setattr("sys.argv", ["balora-eval-gsm8k", "--limit", "3"])
    assert cli.run_gsm8k() == 0
    assert capsys.readouterr().out == "ran ['--limit', '3']\n"
    assert cli.run_mbpp() == 2  # no eval/mbpp.py in this folder: a one-line error, exit status 2
    assert f"{tmp_path / 'mbpp.py'} not found" in capsys.readouterr().err
