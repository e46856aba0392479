"""MT-Bench: two-turn answers in the training format, judged by any OpenAI-compatible endpoint.

    balora-eval-mt-bench --model M [--adapter DIR] --judge_model gpt-4 --output_dir out/mt_bench
                                                                      # key from $OPENAI_API_KEY
    balora-eval-mt-bench --samples answers.jsonl --judge_base_url http://127.0.0.1:8000/v1 \
        --judge_model my-judge --output_dir out/mt_bench              # rows {task_id, completion: [t1, t2]}
    (from a checkout: python eval/mt_bench.py ..., the same command)

score = mean first-turn rating (1-10), as in the paper; turn-2 and average ratings are reported beside it.
Without --data the questions, judge prompts and reference answers are read from mt_bench/ of the data
folder ($BALORA_DATA_DIR, default data/) when there; the questions else from the hub.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from balora.cli.command import run_command
from balora.eval import mt_bench
from balora.eval.data import benchmark_file
from balora.eval.generation import Generator, generate_to_file
from balora.eval.runner import EvalArguments, int_task_id
from balora.eval.samples import build_metrics, read_samples, write_results
from balora.repro.config import parse_args
from balora.repro.data import data_dir


@dataclass
class JudgeArguments:
    judge_model: str = field(default="gpt-4", metadata={"help": "Judge model name (the paper: GPT-4)."})
    judge_base_url: str | None = field(
        default=None,
        metadata={
            "help": "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default: api.openai.com)."
        },
    )
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Env var holding the judge key."}
    )
    judge_prompts: str | None = field(
        default=None,
        metadata={
            "help": "FastChat judge_prompts.jsonl (default: mt_bench/judge_prompts.jsonl of the data folder, $BALORA_DATA_DIR)."
        },
    )
    reference_answers: str | None = field(
        default=None,
        metadata={
            "help": "FastChat reference_answer/gpt-4.jsonl (default: the data folder's copy when present)."
        },
    )
    judge_turns: int = field(
        default=2, metadata={"help": "Turns to judge: 2 (both), 1, or 0 (answers only)."}
    )
    judge_retries: int = field(default=5, metadata={"help": "Attempts per judgment before a clear error."})
    judge_backoff_s: float = field(default=2.0, metadata={"help": "First wait between attempts (doubles)."})
    judge_timeout_s: float = field(default=120.0, metadata={"help": "Per-request timeout of the judge."})
    answer_model_id: str | None = field(
        default=None,
        metadata={
            "help": "model_id written to FastChat's model_answer/<model_id>.jsonl (default: the adapter's or "
            "model's folder name, or the samples file's name)."
        },
    )

    def __post_init__(self):
        if self.judge_turns not in (0, 1, 2):
            raise ValueError(f"--judge_turns must be 0, 1 or 2, got {self.judge_turns}")


def _answers(questions: list[dict], args: EvalArguments) -> dict[int, list[str]]:
    """Turn-1 and turn-2 answers per question: read (--samples) or generated resumably."""
    if args.samples is not None:
        read = read_samples(args.samples, [q["task_id"] for q in questions], int_task_id, turns=True)
        return {qid: value[0] if isinstance(value[0], list) else [value[0]] for qid, value in read.items()}
    cfg = args.decoding()
    generator = Generator(args.model, args.adapter, cfg, dtype=args.dtype)
    path = Path(args.output_dir) / "completions.jsonl"
    first = generate_to_file(
        generator, [(f"{q['task_id']}#t1", q["prompt"]) for q in questions], path, cfg, desc="mt_bench turn 1"
    )
    second_items = [
        (
            f"{q['task_id']}#t2",
            mt_bench.turn2_prompt(q["turns"][0], first[f"{q['task_id']}#t1"], q["turns"][1]),
        )
        for q in questions
        if len(q["turns"]) > 1
    ]
    second = generate_to_file(generator, second_items, path, cfg, desc="mt_bench turn 2")
    return {
        q["task_id"]: [first[f"{q['task_id']}#t1"]]
        + ([second[f"{q['task_id']}#t2"]] if f"{q['task_id']}#t2" in second else [])
        for q in questions
    }


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def main(argv: list[str] | None = None) -> dict:
    """Generate (or read) answers, judge them, write samples.jsonl + metrics.json; return the metrics."""
    start = time.time()
    args, judge_args = parse_args((EvalArguments, JudgeArguments), argv, description=__doc__)
    questions, data_info = mt_bench.load_questions(benchmark_file(args.data, mt_bench.DATA_FILE), args.limit)
    judgments = {}
    judge = mt_bench.JudgeConfig(
        model=judge_args.judge_model,
        base_url=judge_args.judge_base_url,
        api_key_env=judge_args.judge_api_key_env,
        retries=judge_args.judge_retries,
        backoff_s=judge_args.judge_backoff_s,
        timeout_s=judge_args.judge_timeout_s,
    )
    mt_bench_data = data_dir() / "mt_bench"
    prompts_path = judge_args.judge_prompts or mt_bench_data / "judge_prompts.jsonl"
    references_path = judge_args.reference_answers or (
        mt_bench_data / "reference_answer" / "gpt-4.jsonl"
        if (mt_bench_data / "reference_answer" / "gpt-4.jsonl").is_file()
        else None
    )
    if judge_args.judge_turns:
        # Fail before hours of generation, not after: judge key, prompts and references are checked first.
        judge.client()
        prompts = mt_bench.load_judge_prompts(prompts_path)
        references = mt_bench.load_reference_answers(references_path)
    answers = _answers(questions, args)
    model_id = judge_args.answer_model_id or Path(
        args.adapter or args.model or args.samples
    ).name.removesuffix(".jsonl")
    mt_bench.write_model_answers(
        Path(args.output_dir) / "model_answer" / f"{model_id}.jsonl", questions, answers, model_id
    )  # FastChat's format: FastChat's own judge can read it
    if judge_args.judge_turns:
        judgments = mt_bench.judge_all(
            questions,
            answers,
            judge_args.judge_turns,
            judge,
            prompts,
            references,
            Path(args.output_dir) / "judgments.jsonl",
        )
    rows, turn_ratings = [], {1: [], 2: []}
    for question in questions:
        given = answers.get(question["task_id"])
        ratings = [
            judgments[(question["task_id"], t)]["rating"] if (question["task_id"], t) in judgments else None
            for t in (1, 2)
        ]
        for turn, rating in zip((1, 2), ratings, strict=True):
            if rating is not None and rating >= 0:  # -1 = unparseable judgment, excluded like FastChat
                turn_ratings[turn].append(rating)
        rows.append(
            {
                "task_id": question["task_id"],
                "category": question["category"],
                "completion": given,
                "extracted": given,
                "correct": ratings,
                "ratings": ratings,
                "missing": not given,
                "judgments": [judgments.get((question["task_id"], t), {}).get("judgment") for t in (1, 2)],
            }
        )
    unparseable = sum(1 for record in judgments.values() if record["rating"] < 0)
    extra = {
        "turn1_score": _mean(turn_ratings[1]),
        "turn2_score": _mean(turn_ratings[2]),
        "average_score": _mean(turn_ratings[1] + turn_ratings[2]),
        "judged_turn1": len(turn_ratings[1]),
        "judged_turn2": len(turn_ratings[2]),
        "unparseable_judgments": unparseable,
        "missing": sum(1 for row in rows if row["missing"]),
        "judge_model": judge.model if judgments else None,
    }
    settings = {
        **args.run_settings(data_info),
        "judge": {
            "model": judge.model,
            "base_url": judge.base_url,
            "turns": judge_args.judge_turns,
            "prompts": str(prompts_path),
            "reference_answers": str(references_path),
            "temperature": 0,
            "max_tokens": judge.max_tokens,
        },
    }
    metrics = build_metrics(
        benchmark="mt_bench",
        score=extra["turn1_score"],
        n=len(questions),
        protocol=mt_bench.PROTOCOL,
        protocol_version=mt_bench.PROTOCOL_VERSION,
        settings=settings,
        start_time=start,
        seed=args.seed,
        extra=extra,
    )
    write_results(args.output_dir, rows, metrics)
    return metrics


def report(metrics: dict) -> str:
    return (
        f"mt_bench score={metrics['score']} (turn 1) turn2={metrics['turn2_score']} "
        f"average={metrics['average_score']} n={metrics['n']}"
    )


def cli() -> int:
    """Console entry point `balora-eval-mt-bench` (and `python eval/mt_bench.py`): returns the exit status."""
    # An unreachable judge is reported in one line: its judgments so far are cached for the rerun.
    return run_command(main, report, user_errors=(mt_bench.JudgeUnavailable,))


if __name__ == "__main__":
    sys.exit(cli())
