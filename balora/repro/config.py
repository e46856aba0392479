"""Command-line + YAML configuration for the entry scripts.

`--config file.yaml` gives defaults (flat keys = dataclass field names), command-line flags override
them, and an unknown key in either place is an error. The resolved configuration is saved beside the
outputs so every result is traceable to its exact settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help; the description (the script's docstring) as written."""


def pop_flag(argv: list[str], flag: str, what: str) -> tuple[str | None, list[str]]:
    """Take `flag VALUE` / `flag=VALUE` out of argv: (the last value or None, the other arguments).

    Raises:
        ValueError: `flag` is the last argument ("<flag> needs <what>").
    """
    rest, value = [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            if i + 1 >= len(argv):
                raise ValueError(f"{flag} needs {what}")
            value, i = argv[i + 1], i + 2
            continue
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    try:
        return pop_flag(argv, "--config", "a YAML file path")
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML config; raise with the file name when it is not a mapping."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: malformed YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a flat mapping of field: value")
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ValueError(f"{path}: configs are flat; nested keys {nested} are not supported")
    return data


def _yaml_value(path: str, action: argparse.Action, value: Any) -> Any:
    """`value` of YAML key `action.dest`, converted like a command-line value; a wrong type is a ValueError
    naming the file and the key (argparse does not check defaults, and a float max_steps or a list lora_r
    would fail much later, deep inside training)."""
    if value is None:
        return value
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(value, dict) or (isinstance(value, list) and not many):
        raise ValueError(f"{path}: {action.dest} must be a single value, got {value!r}")
    converted = []
    for item in value if isinstance(value, list) else [value]:
        kind = action.type
        if isinstance(item, (list, dict)):
            raise ValueError(f"{path}: {action.dest} must be a list of single values, got {value!r}")
        if kind is not None and kind is not str and isinstance(item, str):
            try:
                item = kind(item)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                raise ValueError(f"{path}: {action.dest}: {item!r} is not valid ({err})") from None
        elif kind is int and (isinstance(item, bool) or not isinstance(item, int)):
            raise ValueError(f"{path}: {action.dest} must be an integer, got {item!r}")
        elif kind is float and (isinstance(item, bool) or not isinstance(item, (int, float))):
            raise ValueError(f"{path}: {action.dest} must be a number, got {item!r}")
        elif kind is float:
            item = float(item)
        converted.append(item)
    return converted if many else converted[0]


def parse_args(
    dataclass_types: tuple[type, ...], argv: list[str] | None = None, description: str | None = None
) -> tuple[Any, ...]:
    """Parse `--config x.yaml` + flags into instances of `dataclass_types` (in that order).

    `description` is the `--help` text (default: the docstring of the running `__main__`).

    Raises:
        ValueError: the YAML file has keys that no dataclass declares (lists them).
        SystemExit: argparse errors (unknown flags, bad values), as usual for a command line.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, rest = _split_config_flag(argv)
    # The running script's docstring is its --help description (what it does, how to launch it).
    if description is None:
        description = getattr(sys.modules.get("__main__"), "__doc__", None)
    parser = HfArgumentParser(dataclass_types, description=description, formatter_class=_HelpFormatter)
    parser.add_argument("--config", help="YAML file of defaults (flat field: value); flags override it")
    if config_path:
        values = load_yaml_config(config_path)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{config_path}: unknown config keys {unknown}; check the spelling against "
                f"`--help` of this script"
            )
        # Default values are not type-converted or checked by argparse: do it here, as for a command-line value.
        for action in parser._actions:
            if action.dest in values:
                values[action.dest] = _yaml_value(config_path, action, values[action.dest])
        parser.set_defaults(**values)
        # A YAML value satisfies a required flag.
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    with warnings.catch_warnings():
        # transformers 5 renamed gradient_checkpointing(_kwargs) to activation_checkpointing(_kwargs) and
        # warns on every use of the old names, which the configs and commands keep (the two stay in sync).
        warnings.filterwarnings(
            "ignore", message="`gradient_checkpointing(_kwargs)?` is deprecated", category=FutureWarning
        )
        parsed = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=False)
    instances = tuple(p for p in parsed if dataclasses.is_dataclass(p))
    check_finite(*instances)
    return instances


def check_finite(*instances: Any) -> None:
    """Every float field of the dataclass instances is a finite number: argparse and YAML both accept
    `inf` and `nan`, with which a run trains to NaN weights (or silently drops a NaN λ).

    Raises:
        ValueError: naming the flag and its value.
    """
    for instance in instances:
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--{f.name} must be a finite number, got {value}")


def resolved_config(*instances: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """All fields of the given dataclass instances as one flat, YAML-safe dict."""
    out: dict[str, Any] = {}
    for instance in instances:
        for f in dataclasses.fields(instance):
            if f.name in skip or f.name.startswith("_"):
                continue
            value = getattr(instance, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            if isinstance(value, (list, tuple, dict)):
                value = json.loads(json.dumps(value, default=str))  # YAML-safe plain containers
            elif not isinstance(value, (int, float, str, bool, type(None))):
                value = str(value)
            out[f.name] = value
    return out


# libyaml's safe loader when PyYAML was built with it: ~7x faster on the 150-key saved configs.
SAFE_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OBJECT_REPR = re.compile(r"[A-Z]\w*Config\(.*\)", re.DOTALL)


def load_saved_config(
    path: str | Path, dataclass_types: tuple[type, ...], overrides: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """A run's saved config.yaml (`resolved_config` of these dataclasses) back as their instances, checked
    as a command line is (`__post_init__`, finite numbers); `overrides` replaces saved values (e.g. the
    device settings of a run made on another machine).

    Raises:
        ValueError: a key that no dataclass declares, or a value the dataclasses refuse (naming the file).
    """
    path = Path(path)
    values = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_YAML_LOADER) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a saved config must be a mapping of field: value")
    declared = {cls: [f.name for f in dataclasses.fields(cls) if f.init] for cls in dataclass_types}
    unknown = sorted(set(values) - {name for names in declared.values() for name in names})
    if unknown:
        raise ValueError(f"{path}: keys {unknown} are not settings of this command")
    # resolved_config writes an object it cannot write as YAML (TrainingArguments' AcceleratorConfig) as
    # its repr: a record for the reader, not a value to set again; the field keeps its default.
    values = {k: v for k, v in values.items() if not (isinstance(v, str) and _OBJECT_REPR.fullmatch(v))}
    values.update(overrides or {})
    try:
        instances = tuple(
            cls(**{name: values[name] for name in names if name in values}) for cls, names in declared.items()
        )
        check_finite(*instances)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
    return instances


def changed_keys(
    saved: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...] = ()
) -> dict[str, tuple]:
    """{key: (saved value, new value)} of the keys whose value differs, outside `ignore`."""
    keys = (set(saved) | set(new)) - set(ignore)
    return {k: (saved.get(k), new.get(k)) for k in sorted(keys) if saved.get(k) != new.get(k)}


def save_config(path: str | Path, config: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
