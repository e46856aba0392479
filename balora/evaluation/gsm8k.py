"""GSM8K: data, prompt, answer extraction and numeric comparison (protocol "balora-gsm8k" v1).

Extraction order (the first that yields a number wins; the method is recorded per sample):
  1. "marker":      the first number after the LAST "The answer is" (MetaMath format; colon optional)
  2. "hash":        the number after the last "#### " (GSM8K's own answer format)
  3. "boxed":       the number inside the last \\boxed{...}
  4. "last_number": the last number anywhere in the completion
Numbers are compared as exact rationals after removing thousands separators, "$", "%", units
and a trailing ".": "1,000" == "1000", "$18.00" == "18", "18.0" == "18", "3/4" == "0.75".
"""

from __future__ import annotations

import hashlib
import json
import re
from fractions import Fraction
from pathlib import Path

from balora.prompts import format_prompt

PROTOCOL = "balora-gsm8k"
PROTOCOL_VERSION = "1"
HUB_ID = "openai/gsm8k"

# A number: optional sign, digits with optional thousands commas, optional decimals, or a fraction.
_NUMBER_RE = re.compile(r"(?<![\w.])" + r"(-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\$?\.\d+)")
_MARKER_RE = re.compile(r"the answer is\s*:?", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def parse_number(text: str) -> Fraction | None:
    """Parse one GSM8K-style number ("1,234.50", "$18", "50%", "-3", "3/4", "18.") to an exact Fraction."""
    if text is None:
        return None
    cleaned = text.strip().replace("−", "-").replace("$", "").replace("%", "").replace(",", "")
    cleaned = cleaned.replace(" ", "").rstrip(".")
    if not cleaned:
        return None
    try:
        if "/" in cleaned:
            numerator, denominator = cleaned.split("/", 1)
            if Fraction(denominator) == 0:
                return None
            return Fraction(numerator) / Fraction(denominator)
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def _first_number(text: str) -> str | None:
    match = _NUMBER_RE.search(text)
    return match.group(1) if match else None


def _last_number(text: str) -> str | None:
    matches = _NUMBER_RE.findall(text)
    return matches[-1] if matches else None


def extract_answer(completion: str) -> tuple[str | None, str | None]:
    """Return (answer string, method) from a model completion, or (None, None)."""
    markers = list(_MARKER_RE.finditer(completion))
    if markers:
        number = _first_number(completion[markers[-1].end():])
        if number is not None:
            return number, "marker"
    if "####" in completion:
        number = _first_number(completion.rsplit("####", 1)[1])
        if number is not None:
            return number, "hash"
    boxed = _BOXED_RE.findall(completion)
    if boxed:
        number = _first_number(boxed[-1])
        if number is not None:
            return number, "boxed"
    number = _last_number(completion)
    return (number, "last_number") if number is not None else (None, None)


def gold_answer(answer_field: str) -> str:
    """The reference number of a GSM8K row: the text after "#### "."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer without '#### N': {answer_field[-80:]!r}")
    return answer_field.rsplit("####", 1)[1].strip()


def is_correct(predicted: str | None, gold: str) -> bool:
    """Numeric equality of an extracted answer and the gold answer (exact rationals)."""
    value, reference = parse_number(predicted), parse_number(gold)
    return value is not None and reference is not None and value == reference


def load_tasks(data: str | None = None, limit: int | None = None) -> tuple[list[dict], dict]:
    """GSM8K test problems as tasks [{task_id, prompt, gold, question, solution}] and a description of the data.

    Args:
        data: a local JSONL in the original format (question, answer ending "#### N"); None loads
            the hub dataset openai/gsm8k (config "main", split "test").
        limit: keep the first `limit` problems (file order).
    """
    if data:
        rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
        source = {"source": str(data), "file_sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest()}
    else:
        import datasets

        rows = list(datasets.load_dataset(HUB_ID, "main", split="test"))
        source = {"source": f"hub:{HUB_ID}/main/test"}
    source["rows_in_file"] = len(rows)
    if limit is not None:
        rows = rows[:limit]
    tasks = []
    for index, row in enumerate(rows):
        if "question" not in row or "answer" not in row:
            raise ValueError(f"{data or HUB_ID} row {index}: GSM8K rows need 'question' and 'answer' fields")
        tasks.append({"task_id": index, "prompt": format_prompt(row["question"]),
                      "gold": gold_answer(row["answer"]), "question": row["question"], "solution": row["answer"]})
    return tasks, source


def score_sample(task: dict, completion: str) -> dict:
    """Per-sample record fields: extracted answer, extraction method, gold, correct."""
    extracted, method = extract_answer(completion)
    return {"extracted": extracted, "extraction": method, "gold": task["gold"],
            "correct": is_correct(extracted, task["gold"])}
