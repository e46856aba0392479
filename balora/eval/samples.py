"""Samples files in, results out: the one format every evaluator reads and writes.

Input (score-only mode, like evalplus): JSONL rows {"task_id": ..., "completion": "<raw model output>"}
and, for pass@k with n samples per task, an optional integer "sample_index" (0..n-1).
Task ids: the 0-based row index of the test file for GSM8K and MATH, "HumanEval/N", the MBPP
task_id, the MT-Bench question_id. Malformed lines, unknown task ids and duplicates are errors that
name the line; tasks without a row are counted as failures and reported under `missing`.

Output in --output_dir: samples.jsonl (one row per task and sample: task_id, completion, extracted,
correct, and grader details) and metrics.json (headline `score`, `n`, protocol, provenance).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from balora.repro.provenance import collect, write_json


class SamplesError(ValueError):
    """A samples file that cannot be scored as it is (the message names the file and line)."""


def read_samples(
    path: str | os.PathLike,
    known_ids: Iterable,
    normalize_id: Callable[[Any], Any] = lambda x: x,
    multiple: bool = False,
    turns: bool = False,
    rejected: list[str] | None = None,
) -> dict[Any, list]:
    """Read and validate a samples file: {task_id: [completion for sample 0, 1, ...]}.

    Args:
        path: JSONL file.
        known_ids: the task ids of the benchmark (after `limit`).
        normalize_id: maps a raw task_id to the benchmark's id type (e.g. "7" -> 7); raises
            ValueError/TypeError for impossible ids.
        multiple: allow several rows per task (distinct "sample_index"), for pass@k.
        turns: a completion may also be a list of strings, one per conversation turn (MT-Bench).
        rejected: when given, a bad row (malformed JSON, a missing or ill-typed field, an unknown task
            id, a duplicate) is appended here as one `file:line: reason` message and skipped, so its
            task counts as missing (failed) and the rest is graded; when None, it raises.

    Raises:
        SamplesError: a bad row, unless `rejected` collects them.
    """
    known = set(known_ids)
    by_task: dict[Any, dict[int, str]] = {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--samples {path} does not exist")
    with open(path, "rb") as handle:  # bytes, so a bad encoding is reported with its line
        for lineno, raw in enumerate(handle, start=1):
            try:
                _read_row(raw, f"{path}:{lineno}", known, normalize_id, multiple, turns, by_task)
            except SamplesError as err:
                if rejected is None:
                    raise
                rejected.append(str(err))
    return {task: [samples[i] for i in sorted(samples)] for task, samples in by_task.items()}


def _read_row(
    raw: bytes,
    where: str,
    known: set,
    normalize_id: Callable[[Any], Any],
    multiple: bool,
    turns: bool,
    by_task: dict[Any, dict[int, str]],
) -> None:
    """Validate one line of a samples file and add its completion to `by_task` (SamplesError if bad)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SamplesError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    if not line.strip():
        return
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise SamplesError(f"{where}: not valid JSON ({err.msg}); each line must be one JSON object") from err
    if not isinstance(row, dict) or "task_id" not in row or "completion" not in row:
        raise SamplesError(f"{where}: each row needs 'task_id' and 'completion' fields")
    completion = row["completion"]
    is_turn_list = (
        turns and isinstance(completion, list) and completion and all(isinstance(c, str) for c in completion)
    )
    if not isinstance(completion, str) and not is_turn_list:
        expected = "a string or a list of strings (one per turn)" if turns else "a string"
        raise SamplesError(f"{where}: 'completion' must be {expected}, got {type(completion).__name__}")
    try:
        task_id = normalize_id(row["task_id"])
    except (ValueError, TypeError) as err:
        raise SamplesError(f"{where}: bad task_id {row['task_id']!r}: {err}") from err
    if task_id not in known:
        raise SamplesError(
            f"{where}: unknown task_id {row['task_id']!r} (not in the benchmark or beyond --limit)"
        )
    sample_index = row.get("sample_index", 0)
    if not isinstance(sample_index, int) or sample_index < 0:
        raise SamplesError(f"{where}: 'sample_index' must be a non-negative integer")
    samples = by_task.setdefault(task_id, {})
    if sample_index in samples or (samples and not multiple):
        raise SamplesError(
            f"{where}: duplicate row for task_id {row['task_id']!r}"
            + (f" sample_index {sample_index}" if multiple else "")
        )
    samples[sample_index] = completion


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_results(output_dir: str | os.PathLike, rows: list[dict], metrics: dict) -> None:
    """Write samples.jsonl (atomically replaced) and metrics.json."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / "samples.jsonl.tmp"
    with open(tmp, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, output_dir / "samples.jsonl")
    write_json(output_dir / "metrics.json", metrics)


def build_metrics(
    *,
    benchmark: str,
    score: float,
    n: int,
    protocol: str,
    protocol_version: str,
    settings: dict,
    start_time: float,
    seed: int | None,
    extra: dict | None = None,
) -> dict:
    """The metrics.json payload: headline first, then protocol, settings and provenance."""
    metrics = {
        "benchmark": benchmark,
        "score": score,
        "n": n,
        "protocol": protocol,
        "protocol_version": protocol_version,
    }
    metrics.update(extra or {})
    metrics["settings"] = settings
    metrics["provenance"] = collect(seed, start_time)
    metrics["finished_at_unix"] = round(time.time(), 3)
    return metrics


def write_evalplus_samples(output_dir: str | os.PathLike, evalplus_id: Callable[[Any], str]) -> Path:
    """Write evalplus_samples.jsonl beside samples.jsonl: one {"task_id", "solution"} row per sample.

    The format `evalplus.evaluate --samples` reads: `task_id` as evalplus spells it ("HumanEval/N",
    "Mbpp/N") and `solution`, the complete program that was graded (for a HumanEval continuation
    the prompt + the completion, as evalplus builds it itself). A task without a completion gets an
    empty solution, so the file covers every task and evalplus counts it as a failure too.
    """
    output_dir = Path(output_dir)
    path = output_dir / "evalplus_samples.jsonl"
    with open(output_dir / "samples.jsonl") as rows, open(path, "w") as out:
        for line in rows:
            row = json.loads(line)
            out.write(
                json.dumps(
                    {"task_id": evalplus_id(row["task_id"]), "solution": row.get("solution") or ""},
                    ensure_ascii=False,
                )
                + "\n"
            )
    return path
