"""MT-Bench: two-turn answers in the training prompt format, single-answer grading by an LLM judge.

Protocol "balora-mt-bench" v1 (eval/README.md):
* answers: turn 1 prompt = the Alpaca prompt of question 1; turn 2 prompt = turn 1 prompt + the raw
  turn-1 completion + "\\n\\n### Instruction:\\n" + question 2 + "\\n\\n### Response:" (the same
  template continued, like FastChat's `alpaca` conversation template but with the training layout).
* judging: FastChat's single-answer prompts: `single-v1` (turn 1) and `single-v1-multi-turn`
  (turn 2); the `-math-` variants with GPT-4 reference answers for math, reasoning and coding.
  Any OpenAI-compatible endpoint through the `openai` client, temperature 0, max 2048 tokens.
* rating: the number in "[[N]]" (FastChat's pattern, with its "[N]" fallback); unparseable
  judgments get rating -1 and are excluded from the means (as FastChat's show_result does).
* score: mean turn-1 rating (the paper's first-turn number); turn-2 and overall means beside it.
Judgments are cached in <output_dir>/judgments.jsonl (one line per judgment, fsync'ed), keyed by
question, turn, judge model, judge prompt and a hash of the judged answers, so a rerun costs nothing
and a judge that fails half-way loses none of the judgments already made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from balora.repro.prompts import format_prompt

logger = logging.getLogger(__name__)

PROTOCOL = "balora-mt-bench"
PROTOCOL_VERSION = "1"
HUB_ID = "HuggingFaceH4/mt_bench_prompts"
DATA_FILE = "mt_bench/question.jsonl"  # FastChat's copy of the 80 questions in the data folder
NEED_REFERENCE = ("math", "reasoning", "coding")
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


class JudgeUnavailable(RuntimeError):
    """The judge endpoint kept failing (connection, timeout, rate limit, server error) after every retry."""


def turn2_prompt(question_1: str, answer_1: str, question_2: str) -> str:
    """The second-turn prompt: the first exchange in the training template, then the new instruction."""
    return f"{format_prompt(question_1)}{answer_1}\n\n### Instruction:\n{question_2}\n\n### Response:"


def parse_rating(judgment: str) -> float:
    """FastChat's rating parser: "[[N]]", else "[N]"; -1 when neither is present."""
    match = _RATING.search(judgment) or _RATING_BACKUP.search(judgment)
    return float(match.group(1)) if match else -1.0


def load_questions(data: str | None = None, limit: int | None = None) -> tuple[list[dict], dict]:
    """MT-Bench questions [{question_id, category, turns, reference}] (FastChat file or the hub copy)."""
    if data:
        rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
        source = {"source": str(data), "file_sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest()}
    else:
        from balora.eval.data import hub_errors
        from balora.repro import rehearsal

        with hub_errors(HUB_ID, DATA_FILE):
            hub_rows = list(rehearsal.load_hub_dataset(HUB_ID, split="train"))
        rows = [
            {
                "question_id": r["prompt_id"],
                "category": r["category"],
                "turns": r["prompt"],
                "reference": r.get("reference") or None,
            }
            for r in hub_rows
        ]
        source = {"source": f"hub:{HUB_ID}/train"}
    source["rows_in_file"] = len(rows)
    questions = []
    for index, row in enumerate(rows[:limit] if limit is not None else rows):
        if "question_id" not in row or not isinstance(row.get("turns"), list) or not row["turns"]:
            raise ValueError(
                f"{data or HUB_ID} row {index}: MT-Bench rows need question_id and a list of turns"
            )
        questions.append(
            {
                "task_id": int(row["question_id"]),
                "category": row.get("category", "general"),
                "turns": list(row["turns"]),
                "reference": row.get("reference"),
                "prompt": format_prompt(row["turns"][0]),
            }
        )
    return questions, source


def load_reference_answers(path: str | os.PathLike | None) -> dict[int, list[str]]:
    """{question_id: [reference turn 1, turn 2]} from FastChat's reference_answer/gpt-4.jsonl."""
    if path is None:
        return {}
    answers = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            answers[int(row["question_id"])] = list(row["choices"][0]["turns"])
    return answers


def load_judge_prompts(path: str | os.PathLike) -> dict[str, dict]:
    """FastChat's judge_prompts.jsonl as {name: {system_prompt, prompt_template, ...}}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"judge prompts file {path} not found; pass --judge_prompts with FastChat's "
            "fastchat/llm_judge/data/judge_prompts.jsonl"
        )
    prompts = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            prompts[row["name"]] = row
    missing = {"single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"} - set(
        prompts
    )
    if missing:
        raise ValueError(f"{path} lacks the judge prompts {sorted(missing)}")
    return prompts


def judge_messages(
    question: dict, answers: list[str], turn: int, prompts: dict[str, dict], references: dict[int, list[str]]
) -> tuple[str, list[dict]]:
    """(prompt name, chat messages) asking the judge to rate `turn` (1 or 2) of one question."""
    category = question["category"]
    needs_reference = category in NEED_REFERENCE
    reference = references.get(question["task_id"]) or question.get("reference")
    if needs_reference and not reference:
        raise ValueError(
            f"MT-Bench question {question['task_id']} ({category}) needs a reference answer; pass "
            "--reference_answers with FastChat's reference_answer/gpt-4.jsonl"
        )
    name = ("single-math-v1" if needs_reference else "single-v1") + ("-multi-turn" if turn == 2 else "")
    template = prompts[name]
    q = question["turns"]
    if turn == 1:
        fields = {"question": q[0], "answer": answers[0]}
        if needs_reference:
            fields["ref_answer_1"] = reference[0]
    else:
        fields = {"question_1": q[0], "answer_1": answers[0], "question_2": q[1], "answer_2": answers[1]}
        if needs_reference:
            fields.update(ref_answer_1=reference[0], ref_answer_2=reference[1])
    messages = [
        {"role": "system", "content": template["system_prompt"]},
        {"role": "user", "content": template["prompt_template"].format(**fields)},
    ]
    return name, messages


@dataclass
class JudgeConfig:
    """An OpenAI-compatible judge endpoint.

    Attributes:
        model: judge model name (the paper: gpt-4).
        base_url: endpoint (None = api.openai.com).
        api_key_env: environment variable holding the key (the key itself is never logged or written).
        retries: attempts per judgment before giving up.
        backoff_s: first wait between attempts; doubles each time.
        timeout_s: per-request timeout.
    """

    model: str = "gpt-4"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    retries: int = 5
    backoff_s: float = 2.0
    timeout_s: float = 120.0
    max_tokens: int = 2048
    extra: dict = field(default_factory=dict)

    def client(self):
        from openai import OpenAI

        key = os.environ.get(self.api_key_env)
        if not key:
            if self.base_url is None:
                raise ValueError(
                    f"The judge needs an API key in ${self.api_key_env} (or --judge_base_url for a "
                    "local OpenAI-compatible server)"
                )
            key = "EMPTY"  # local servers usually ignore the key, but the client requires one
        # Retries are ours (with backoff and a clear final error), not the client's.
        return OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s)


def _cache_key(question_id: int, turn: int, judge: str, prompt_name: str, answers: list[str]) -> str:
    digest = hashlib.sha256(json.dumps(answers[:turn]).encode()).hexdigest()[:16]
    return f"{question_id}|{turn}|{judge}|{prompt_name}|{digest}"


def judge_all(
    questions: list[dict],
    answers: dict[int, list[str]],
    turns: int,
    cfg: JudgeConfig,
    prompts: dict[str, dict],
    references: dict[int, list[str]],
    cache_path: Path,
) -> dict[tuple, dict]:
    """Judge every (question, turn) that has answers; {(question_id, turn): judgment record}.

    Raises:
        RuntimeError: the judge failed `cfg.retries` times in a row; every judgment made before that
            is already in the cache file.
    """
    from tqdm import tqdm

    cached: dict[str, dict] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn last line of an interrupted run
            cached[record["key"]] = record
    jobs = []
    for question in questions:
        given = answers.get(question["task_id"])
        if not given:
            continue
        for turn in range(1, min(turns, len(given), len(question["turns"])) + 1):
            name, messages = judge_messages(question, given, turn, prompts, references)
            jobs.append(
                (
                    question["task_id"],
                    turn,
                    name,
                    messages,
                    _cache_key(question["task_id"], turn, cfg.model, name, given),
                )
            )
    out: dict[tuple, dict] = {}
    todo = [job for job in jobs if job[4] not in cached]
    for qid, turn, _, _, key in jobs:
        if key in cached:
            out[(qid, turn)] = cached[key]
    if not todo:
        return out
    client = cfg.client()
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_path, "a") as handle:
        for qid, turn, name, messages, key in tqdm(todo, desc="judge", unit="judgment"):
            text = _ask_with_retries(client, cfg, messages, f"question {qid} turn {turn}")
            record = {
                "key": key,
                "question_id": qid,
                "turn": turn,
                "judge_model": cfg.model,
                "judge_prompt": name,
                "judgment": text,
                "rating": parse_rating(text),
            }
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            out[(qid, turn)] = record
    return out


def _ask_with_retries(client, cfg: JudgeConfig, messages: list[dict], what: str) -> str:
    import openai

    wait = cfg.backoff_s
    for attempt in range(1, cfg.retries + 1):
        try:
            response = client.chat.completions.create(
                model=cfg.model, messages=messages, temperature=0, max_tokens=cfg.max_tokens, **cfg.extra
            )
            return response.choices[0].message.content or ""
        except (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.RateLimitError,
            openai.InternalServerError,
        ) as err:
            if attempt == cfg.retries:
                raise JudgeUnavailable(
                    f"The judge at {cfg.base_url or 'api.openai.com'} failed {cfg.retries} times on {what} "
                    f"({type(err).__name__}: {err}). Judgments made so far are cached; rerun the same "
                    "command when the endpoint is up to continue from there."
                ) from err
            logger.warning(
                "judge call for %s failed (%s), retry %d/%d in %.1fs",
                what,
                type(err).__name__,
                attempt,
                cfg.retries - 1,
                wait,
            )
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def write_model_answers(
    path: str | os.PathLike, questions: list[dict], answers: dict[int, list[str]], model_id: str
) -> Path:
    """Write the answers in FastChat's model_answer format (`data/mt_bench/model_answer/<model_id>.jsonl`).

    One JSON line per answered question, sorted by question_id, as FastChat's gen_model_answer.py
    writes them: {"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [...]}],
    "tstamp"}. FastChat draws `answer_id` with shortuuid; here it is a 22-character digest of
    (model_id, question_id, turns), so rewriting the same answers gives the same ids.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for question in sorted(questions, key=lambda q: q["task_id"]):
            turns = answers.get(question["task_id"])
            if not turns:
                continue
            digest = hashlib.sha256(json.dumps([model_id, question["task_id"], turns]).encode()).hexdigest()[
                :22
            ]
            row = {
                "question_id": question["task_id"],
                "answer_id": digest,
                "model_id": model_id,
                "choices": [{"index": 0, "turns": list(turns)}],
                "tstamp": time.time(),
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
