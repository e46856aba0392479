r"""GSM8K: data, prompt, answer extraction and numeric comparison (protocol "balora-gsm8k" v2).

Two readings of every completion are recorded; the reported score is the paper's.

Paper protocol (`accuracy`, the headline `score`): MetaMath's eval_gsm8k.py, which BA-LoRA's
numbers follow. Reproduced exactly, quirks included (`extract_answer`, `answer_value`):
  * the text after the LAST occurrence of exactly "The answer is: " (case and the colon matter);
    a completion without it is wrong;
  * the first match of the regex `[\-+]?\d*[\.,/]?\d+` in that text, stripped;
  * "," removed, the value ROUNDED TO THE NEAREST INTEGER with Python's `round` (half to even:
    "2.5" -> 2), a fraction "a/b" as round(a/b) ("a/0" -> round(a)); an "inf" value is no answer;
  * correct when float(value) == float(gold), gold = the integer after "#### ".
  Consequences worth knowing: "1,234,567" reads as 1234 (one separator in the regex), "17.6"
  counts as 18, "3/4" as 1.

Lenient reading (`accuracy_lenient`; not the paper's, reported beside it and labelled so), the
first that yields a number wins (the method is recorded per sample under `extraction_lenient`):
  1. "marker":      the first number after the LAST "The answer is" (case-insensitive, colon optional)
  2. "hash":        the number after the last "#### " (GSM8K's own answer format)
  3. "boxed":       the number inside the last \boxed{...}
  4. "last_number": the last number anywhere in the completion
  Numbers are compared as exact rationals after removing thousands separators, "$", "%" and a
  trailing ".": "1,000" == "1000", "$18.00" == "18", "18.0" == "18", "3/4" == "0.75", "17.6" != "18".
"""

from __future__ import annotations

import hashlib
import json
import re
from fractions import Fraction
from pathlib import Path

from balora.repro.prompts import format_prompt

PROTOCOL = "balora-gsm8k"
# v1 scored the lenient reading as `score`; v2 scores MetaMath's reading and keeps the lenient one beside it.
PROTOCOL_VERSION = "2"
HUB_ID = "openai/gsm8k"
DATA_FILE = "gsm8k/test.jsonl"  # the same test split in the data folder (scripts/fetch_data.py)
GRADING = {
    "score": "paper protocol (MetaMath eval_gsm8k.py): number after the last 'The answer is: ', "
    "rounded to an integer, compared with the gold; same as `accuracy`",
    "accuracy_lenient": "NOT the paper's protocol: also accepts 'The answer is' in any case, '####', "
    "\\boxed{}, else the last number; exact rational comparison",
}
PAPER_MARKER = "The answer is: "
# MetaMath eval_gsm8k.py, extract_answer_number: the first number-like run after the marker.
_PAPER_NUMBER_RE = re.compile(r"[\-+]?\d*[\.,/]?\d+")

# A number: optional sign, digits with optional thousands commas, optional decimals, or a fraction.
_NUMBER_RE = re.compile(r"(?<![\w.])" + r"(-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\$?\.\d+)")
_MARKER_RE = re.compile(r"the answer is\s*:?", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


# --- the paper's reading (MetaMath eval_gsm8k.py) -------------------------------------------------


def _is_number(text: str) -> bool:
    """MetaMath's is_number: float() parses it, or it is a single unicode numeric character."""
    try:
        float(text)
        return True
    except ValueError:
        pass
    try:
        import unicodedata

        unicodedata.numeric(text)
        return True
    except (TypeError, ValueError):
        return False


def extract_answer(completion: str) -> str | None:
    """The paper's extraction: the first number-like match after the last "The answer is: ", or None."""
    pieces = completion.split(PAPER_MARKER)
    if len(pieces) < 2:
        return None
    match = _PAPER_NUMBER_RE.search(pieces[-1].strip())
    return match.group() if match else None


def answer_value(extracted: str | None) -> int | None:
    """MetaMath's conversion of the extracted text to the integer it compares (None: no answer)."""
    if extracted is None:
        return None
    if "/" in extracted:
        numerator, denominator = extracted.split("/")[0], extracted.split("/")[1]
        if not (_is_number(denominator) and _is_number(numerator)):
            return None
        if denominator == "0":
            return round(float(numerator.replace(",", "")))
        try:
            fraction = Fraction(extracted.replace(",", ""))
        except ZeroDivisionError:  # "5/00": MetaMath's script would stop here; no answer instead
            return None
        return round(float(fraction.numerator / fraction.denominator))
    value = float(extracted.replace(",", ""))
    if value == float("inf"):
        return None
    return round(value)


def is_correct(value: int | None, gold: str) -> bool:
    """The paper's comparison: float(value) == float(gold) (gold: the "#### N" number, commas removed)."""
    if value is None:
        return False
    reference = parse_number(gold)
    return reference is not None and float(value) == float(reference)


# --- the lenient reading ------------------------------------------------------------------------


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


def extract_answer_lenient(completion: str) -> tuple[str | None, str | None]:
    """The lenient reading: (answer string, method) from a model completion, or (None, None)."""
    markers = list(_MARKER_RE.finditer(completion))
    if markers:
        number = _first_number(completion[markers[-1].end() :])
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


def is_correct_lenient(predicted: str | None, gold: str) -> bool:
    """The lenient comparison: exact rational equality of an extracted answer and the gold answer."""
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
        from balora.eval.data import hub_errors
        from balora.repro import rehearsal

        with hub_errors(HUB_ID, DATA_FILE):
            rows = list(rehearsal.load_hub_dataset(HUB_ID, "main", split="test"))
        source = {"source": f"hub:{HUB_ID}/main/test"}
    source["rows_in_file"] = len(rows)
    if limit is not None:
        rows = rows[:limit]
    tasks = []
    for index, row in enumerate(rows):
        if "question" not in row or "answer" not in row:
            raise ValueError(f"{data or HUB_ID} row {index}: GSM8K rows need 'question' and 'answer' fields")
        tasks.append(
            {
                "task_id": index,
                "prompt": format_prompt(row["question"]),
                "gold": gold_answer(row["answer"]),
                "question": row["question"],
                "solution": row["answer"],
            }
        )
    return tasks, source


def score_sample(task: dict, completion: str) -> dict:
    """Per-sample record fields: both readings (the paper's is `correct`), with what each extracted.

    `extracted`/`value`/`correct`: the paper's reading (`extraction` is "marker" or None);
    `extracted_lenient`/`extraction_lenient`/`correct_lenient`: the lenient one.
    """
    extracted = extract_answer(completion)
    value = answer_value(extracted)
    lenient, method = extract_answer_lenient(completion)
    return {
        "extracted": extracted,
        "value": value,
        "extraction": "marker" if extracted is not None else None,
        "gold": task["gold"],
        "correct": is_correct(value, task["gold"]),
        "extracted_lenient": lenient,
        "extraction_lenient": method,
        "correct_lenient": is_correct_lenient(lenient, task["gold"]),
    }
