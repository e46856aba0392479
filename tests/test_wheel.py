"""The package without its checkout: the wheel is built, installed (not editable) into a fresh virtual
environment outside the repository, and its console commands run from a folder outside it.

Offline: the wheel is built without build isolation and installed with `--no-index --no-deps`; the new
environment sees this environment's pinned packages through a .pth file, so nothing is downloaded and
the commands import the installed balora, never the checkout's.
"""

import importlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "eval"
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
COMMANDS = sorted(SCRIPTS)

# Run by the new environment's interpreter: console entry points of the installed distribution are
# called in forked children (the heavy imports are done once, before forking), one after the other, with
# the argument lists and environment variables of argv[2] (JSON: [[command, [arg, ...], {var: value}],
# ...]), and the rehearsal's stand-in of a hub dataset is read from the installed package.
DRIVER = r"""
import json, os, sys
from importlib import metadata

import balora.trainer, datasets, peft  # noqa: F401 - imported once, before forking
from balora.repro import rehearsal

out = {"balora_file": __import__("balora").__file__, "runs": []}
os.environ["BALORA_REHEARSAL"] = "1"
out["rehearsal_rows"] = len(rehearsal.load_hub_dataset("openai/gsm8k", "main", split="test"))
del os.environ["BALORA_REHEARSAL"]
commands = {ep.name: ep for ep in metadata.distribution("balora").entry_points if ep.group == "console_scripts"}
out["commands"] = sorted(commands)
for index, (name, args, env) in enumerate(json.loads(sys.argv[2])):
    path = os.path.join(sys.argv[1], f"{index}.out")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.argv = [name, *args]
            os.environ.update(env)
            try:
                code = commands[name].load()()
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code or 0)
    _, status = os.waitpid(pid, 0)
    out["runs"].append({"status": os.waitstatus_to_exitcode(status), "output": open(path).read()})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """{wheel, python, bin, env, outside}: the installed package and where to run its commands."""
    root = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what the wheel is made of, so that the build leaves nothing in the checkout.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "balora", source / "balora", ignore=shutil.ignore_patterns("__pycache__"))
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
        + ["--wheel-dir", str(dist), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = dist.glob("balora-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # The pinned packages of this environment, after the new environment's own site-packages.
    (site_packages / "pinned_packages.pth").write_text(
        "".join(f"import site; site.addsitedir({path!r})\n" for path in sorted(shared))
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    outside = root / "elsewhere"
    outside.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "BALORA_DATA_DIR", "BALORA_REHEARSAL", "VIRTUAL_ENV")
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"
    )
    return {"wheel": wheel, "python": python, "bin": venv / "bin", "env": env, "outside": outside}


def _run(installed, argv, timeout=600, **env):
    return subprocess.run(
        argv,
        cwd=installed["outside"],
        env={**installed["env"], **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_holds_the_package_and_its_data_only(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    top = {name.split("/")[0] for name in names}
    dist_info = {folder for folder in top if folder.endswith(".dist-info")}
    assert top - dist_info == {"balora"}, sorted(top)  # no top-level module beside the package
    assert "balora/cli/train_nlg.py" in names and "balora/cli/eval_gsm8k.py" in names
    fixtures = [n for n in names if n.startswith("balora/repro/hub_fixtures/") and n.endswith(".jsonl")]
    on_disk = list((REPO / "balora" / "repro" / "hub_fixtures").rglob("*.jsonl"))
    assert len(fixtures) == len(on_disk) >= 10


# A tiny BA-LoRA training run, then a GSM8K evaluation of its adapter that reads the data folder's copy
# ($BALORA_DATA_DIR): no --data, no hub.
TRAIN = [
    "--model_name_or_path",
    "tiny-llama",
    "--data_path",
    "embedded:arithmetic",
    "--num_embedded_rows",
    "16",
    "--max_length",
    "96",
    "--method",
    "ba-lora",
    "--lora_r",
    "4",
    "--lora_alpha",
    "4",
    "--regularizer_preset",
    "iclr2026",
    "--per_device_train_batch_size",
    "4",
    "--max_steps",
    "2",
    "--save_strategy",
    "no",
    "--report_to",
    "none",
    "--use_cpu",
    "true",
    "--disable_tqdm",
    "true",
    "--output_dir",
    "run",
]
EVALUATE = ["--model", "tiny-llama", "--adapter", "run/adapter_lora", "--limit", "2", "--max_new_tokens", "4"]
EVALUATE += ["--batch_size", "2", "--output_dir", "gsm8k"]
# The quick start reads its training config from the package (configs/ is the checkout's).
QUICKSTART = ["--model", "tiny-llama", "--max_steps", "1", "--eval_limit", "2", "--output_dir", "quickstart"]


@pytest.fixture(scope="module")
def commands_run(installed, tmp_path_factory) -> dict:
    """The installed commands run by one interpreter of the new environment (DRIVER), from the folder outside
    the checkout: the tiny training, the evaluation of its adapter, the quick start, every command's --help,
    a refused evaluation and the study runner (which needs a checkout). {"report": the driver's report, "calls": what was run, "data": the evaluation's data}."""
    out = installed["outside"]
    data = out / "data" / "gsm8k"
    data.mkdir(parents=True)
    shutil.copy(FIXTURES / "gsm8k_tiny.jsonl", data / "test.jsonl")
    calls = [
        ["balora-train-nlg", TRAIN, {}],
        ["balora-eval-gsm8k", EVALUATE, {"BALORA_DATA_DIR": str(out / "data")}],
        ["balora-quickstart", QUICKSTART, {}],
        *([name, ["--help"], {}] for name in COMMANDS),
        ["balora-eval-gsm8k", ["--model", "m", "--limit", "0", "--output_dir", str(out / "refused")], {}],
        ["balora-run", ["tiny", "--rehearse"], {}],
    ]
    outputs = tmp_path_factory.mktemp("outputs")
    proc = _run(installed, [str(installed["python"]), "-c", DRIVER, str(outputs), json.dumps(calls)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"report": json.loads(proc.stdout.strip().splitlines()[-1]), "calls": calls, "data": data}


def test_every_console_command_answers_help_and_user_errors_from_the_installed_package(
    installed, commands_run
):
    for name in COMMANDS:
        assert (installed["bin"] / name).is_file(), f"{name} was not installed"
    # pip's console-script wrapper in a real process (the commands below run their entry points directly).
    wrapper = _run(installed, [str(installed["bin"] / "balora-run"), "--help"], timeout=120)
    assert wrapper.returncode == 0 and wrapper.stdout.lstrip().startswith("usage:"), wrapper.stderr[-2000:]
    report, calls = commands_run["report"], commands_run["calls"]
    assert Path(report["balora_file"]).is_relative_to(installed["python"].parent.parent), report[
        "balora_file"
    ]
    assert report["rehearsal_rows"] > 0  # the rehearsal's stand-ins ship with the package
    assert report["commands"] == COMMANDS
    for (name, _, _), result in zip(calls[3:-2], report["runs"][3:-2], strict=True):
        assert result["status"] == 0, f"{name} --help exited {result['status']}: {result['output'][-2000:]}"
        assert result["output"].lstrip().startswith("usage:"), f"{name}: {result['output'][:500]}"
        # The description is the command module's docstring, also when __main__ is pip's wrapper.
        module = importlib.import_module(SCRIPTS[name].split(":")[0])
        assert module.__doc__.splitlines()[0] in result["output"], f"{name}: no description"
    refused = report["runs"][-2]
    assert refused["status"] == 2 and refused["output"] == "error: --limit must be >= 1, got 0\n"
    # The study runner needs the checkout's configs and scripts: it says so (it blamed the grid before).
    runner = report["runs"][-1]
    assert runner["status"] == 2 and runner["output"].startswith(
        "error: the studies run from a clone of the repository"
    )


def test_train_then_evaluate_with_the_installed_commands(installed, commands_run):
    out = installed["outside"]
    train, evaluate = commands_run["report"]["runs"][:2]
    assert train["status"] == 0, train["output"][-3000:]
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN
    assert (out / "run" / "adapter_lora" / "adapter_config.json").is_file()

    assert evaluate["status"] == 0, evaluate["output"][-3000:]
    assert "gsm8k score=" in evaluate["output"]
    result = json.loads((out / "gsm8k" / "metrics.json").read_text())
    assert result["n"] == 2 and result["settings"]["data"]["source"] == str(
        commands_run["data"] / "test.jsonl"
    )


def test_the_quick_start_runs_from_the_installed_package(installed, commands_run):
    from balora.repro.nlg_configs import QUICKSTART_CONFIG

    quickstart = commands_run["report"]["runs"][2]
    assert quickstart["status"] == 0, quickstart["output"][-3000:]
    out = installed["outside"] / "quickstart"
    rows = json.loads((out / "summary.json").read_text())
    assert [row["method"] for row in rows] == ["base model", "LoRA", "PiSSA", "BA-LoRA"]
    # The training config it used is the checkout's configs/smollm2/arithmetic.yaml, byte for byte.
    assert (out / "arithmetic.yaml").read_text() == (REPO / QUICKSTART_CONFIG).read_text()
