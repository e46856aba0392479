"""The package metadata (pyproject.toml) against the source tree and requirements.txt.

Checked without building or installing anything (tests/test_wheel.py builds and installs the wheel):
the packages pyproject finds cover every package of balora/, nothing is installed at the top level,
pyproject's dependencies are requirements.txt's pins, every console entry point resolves to a callable
of balora.cli, the repository's scripts are shims whose `__main__` is that `cli()`, the rehearsal's
fixtures are package data, and every pinned runtime package is imported somewhere (or is on the
allow-list below with the reason).
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
TEST_TOOLS = {"pytest", "pytest-xdist", "execnet", "ruff", "setuptools"}
# Runtime pins that no module of this repository imports, and why they are pinned anyway.
USED_WITHOUT_IMPORT = {
    "accelerate": "the transformers Trainer runs on it (device placement, gradient accumulation)",
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


def test_nothing_is_installed_at_the_top_level():
    # The commands are code of the package; top-level modules (train_nlg, quickstart, ...) in
    # site-packages would clash with any other project's modules of the same names.
    setuptools_config = PYPROJECT["tool"]["setuptools"]
    assert "py-modules" not in setuptools_config
    for name, target in SCRIPTS.items():
        assert target.startswith("balora."), f"{name} = {target}"


def test_the_rehearsal_fixtures_are_package_data():
    from balora.repro import rehearsal

    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["balora.repro"]
    package = REPO / "balora" / "repro"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    on_disk = {p for p in rehearsal.FIXTURE_DIR.rglob("*") if p.is_file()}
    assert rehearsal.FIXTURE_DIR.is_relative_to(package)
    assert len(on_disk) >= 10 and on_disk == shipped, sorted(str(p) for p in on_disk ^ shipped)


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


# The repository's scripts that stand for a console command: `python <shim> ...` runs the same cli().
SHIMS = {
    "train_nlg.py": "balora-train-nlg",
    "finetune_glue.py": "balora-finetune-glue",
    "finetune_bert_l_sst2.py": "balora-finetune-bert-l-sst2",
    "quickstart.py": "balora-quickstart",
    "tsne_visualization.py": "balora-tsne",
    "aggregate_results.py": "balora-aggregate",
    "plot_results.py": "balora-plot",
    **{f"eval/{p.stem}.py": f"balora-eval-{p.stem.replace('_', '-')}" for p in (REPO / "eval").glob("*.py")},
}


# Commands without a script in the checkout: scripts/<study>.sh call the runner as `python -m balora.repro.run`.
NO_SHIM = {"balora-run"}


def test_every_command_has_its_shim_and_every_shim_its_command():
    assert set(SHIMS.values()) == set(SCRIPTS) - NO_SHIM
    assert {"eval/gsm8k.py", "eval/math.py", "eval/mt_bench.py"} <= set(SHIMS)
    assert all((REPO / shim).is_file() for shim in SHIMS)


@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_shim_is_a_few_lines_that_call_the_commands_cli(shim):
    """`python <shim>` and the console command run the same code: the shim imports the command's `cli`
    from the module the entry point names, and its `__main__` block is `sys.exit(cli())` (eval/: runs
    that module with `python -m`, since Python puts eval/ first on sys.path, where eval/math.py would
    shadow the standard `math`)."""
    text = (REPO / shim).read_text()
    tree = ast.parse(text)
    module = SCRIPTS[SHIMS[shim]].split(":")[0]
    imported = {
        (node.module, alias.name)
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert (module, "cli") in imported, f"{shim} does not import cli from {module}"
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))], f"{shim} holds code"
    main_block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and ast.unparse(node.test) in ('__name__ == "__main__"', "__name__ == '__main__'")
    )
    if shim.startswith("eval/"):
        execv = f"os.execv(sys.executable, [sys.executable, '-P', '-m', '{module}', *sys.argv[1:]])"
        assert [ast.unparse(node) for node in main_block.body] == ["import os", execv]
    else:
        assert [ast.unparse(node) for node in main_block.body] == ["sys.exit(cli())"]
    code_lines = [line for line in text.split('"""', 2)[-1].splitlines() if line.strip()]
    assert len(code_lines) <= 10, f"{shim}: {len(code_lines)} lines of code"


def test_no_code_of_the_repository_edits_sys_path():
    # The package is installed (scripts/setup_env.sh: editable), so nothing needs a path edit; the
    # eval/ shims run their command as `python -m` (eval/math.py would shadow the standard `math`).
    # Two modules stand in for a new interpreter and set its path as `python X.py` / `python -m X` would:
    # the sandbox's worker (a model-written program's folder first) and the rehearsal's forked stage runner
    # (a stage's script folder first, or the working directory for -m). Neither imports this repository's code
    # through the path.
    offenders = []
    for path in _source_files():
        if path.relative_to(REPO).match("balora/eval/sandbox*.py") or path.relative_to(REPO).match(
            "balora/repro/stage_runner.py"
        ):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.path":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


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
