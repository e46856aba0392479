"""MATH: data, answer extraction and grading (protocol "balora-math" v1).

Primary grader: Hendrycks et al.'s string normalisation (`is_equiv` of the MATH repository's
math_equivalence.py, reproduced below with a few documented additions), then exact string match,
then a numeric comparison when both sides are plain numbers or simple fractions.
Second opinion: Math-Verify (`verify(parse(gold), parse(prediction))`, gold first), reported beside
the primary score as `math_verify_score`, never mixed into it.

Extraction: the text after the LAST "The answer is" (MetaMath format, first line only; a \\boxed{}
inside it is unwrapped), else the content of the last \\boxed{} / \\fbox{} of the completion.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from fractions import Fraction
from pathlib import Path

from balora.prompts import format_prompt

PROTOCOL = "balora-math"
PROTOCOL_VERSION = "1"
HUB_ID = "hendrycks/competition_math"
_MARKER_RE = re.compile(r"the answer is\s*:?", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) with balanced braces; `\\boxed 5` is accepted too."""
    index = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if index < 0:
        return None
    rest = text[index:]
    if rest.startswith("\\boxed ") and "{" not in rest.split()[1][:1]:
        return rest.split()[1].rstrip("$.")
    start = rest.find("{")
    if start < 0:
        return None
    depth = 0
    for position in range(start, len(rest)):
        if rest[position] == "{":
            depth += 1
        elif rest[position] == "}":
            depth -= 1
            if depth == 0:
                return rest[start + 1:position]
    return None  # unbalanced: the completion was cut off


def extract_answer(completion: str) -> tuple[str | None, str | None]:
    """Return (answer, method) with method "marker" or "boxed", or (None, None)."""
    markers = list(_MARKER_RE.finditer(completion))
    if markers:
        segment = completion[markers[-1].end():].strip().split("\n")[0].strip()
        boxed = last_boxed(segment)
        if boxed is not None:
            segment = boxed
        segment = segment.strip().rstrip(".").strip()
        if segment.startswith("$") and segment.endswith("$") and len(segment) > 1:
            segment = segment.strip("$").strip()
        if segment:
            return segment, "marker"
    boxed = last_boxed(completion)
    if boxed is not None and boxed.strip():
        return boxed.strip(), "boxed"
    return None, None


# --- Hendrycks normalisation (math_equivalence.py), with additions marked "added" ---------------


def _fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[:1] == "{":
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b = substr[0], substr[1]
        if b != "{":
            new_str += "{" + a + "}{" + b + "}" + substr[2:]
        else:
            new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    if len(string.split("/")) != 2:
        return string
    a, b = string.split("/")
    try:
        a_int, b_int = int(a), int(b)
    except ValueError:
        return string
    if string != f"{a_int}/{b_int}":
        return string
    return "\\frac{" + str(a_int) + "}{" + str(b_int) + "}"


def _remove_right_units(string: str) -> str:
    # Hendrycks: "\text{ " starts a unit. Added: \mbox and \text{unit} without the space too.
    for unit_start in ("\\text{ ", "\\mbox{ "):
        if unit_start in string:
            return string.split(unit_start)[0]
    return re.sub(r"(?<=[\d}])\\(?:text|mbox)\{\s*[a-zA-Z]+(?:\^\d)?\s*\}$", "", string)


def _fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split[:1] != "{" and split:
            new_string += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new_string += "\\sqrt" + split
    return new_string


def strip_string(string: str) -> str:
    """Hendrycks' `_strip_string` plus additions (marked) for formats MetaMath-style models produce."""
    string = str(string).replace("\n", "").replace("\\!", "")
    string = string.replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")
    # added: bare $ delimiters, thin spaces, \displaystyle, degree words, bmatrix == pmatrix
    string = string.replace("$", "").replace("\\,", "").replace("\\;", "")
    string = string.replace("\\displaystyle", "")
    string = re.sub(r"\s*(?:degrees|degree|°)$", "", string)
    string = string.replace("bmatrix", "pmatrix")
    string = _remove_right_units(string)
    string = string.replace("\\%", "").replace("%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    # "x = 5" / "k=5" -> "5" (short left-hand side only, as in Hendrycks)
    if len(string.split("=")) == 2 and len(string.split("=")[0].strip()) <= 2:
        string = string.split("=")[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    string = _fix_a_slash_b(string)
    # added: \text{(B)} -> (B); trailing "." ; thousands separators in plain integers ("1,000")
    string = re.sub(r"\\text\{(.*?)\}", r"\1", string).rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", string):
        string = string.replace(",", "")
    return string


def _as_number(string: str) -> Fraction | None:
    """A normalised answer that is a plain number or \\frac{a}{b} (with sign), else None (added)."""
    match = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", string)
    try:
        if match:
            value = Fraction(int(match.group(2)), int(match.group(3)))
            return -value if match.group(1) else value
        if re.fullmatch(r"-?\d+(\.\d+)?", string):
            return Fraction(string)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def is_equiv(predicted: str | None, gold: str) -> bool:
    """Hendrycks-style equivalence of two final answers (the primary MATH grader)."""
    if predicted is None:
        return False
    try:
        a, b = strip_string(predicted), strip_string(gold)
    except Exception:  # noqa: BLE001 - Hendrycks compares raw strings when normalisation fails
        return predicted == gold
    if a == b:
        return True
    x, y = _as_number(a), _as_number(b)
    return x is not None and y is not None and x == y


def math_verify_equiv(predicted: str | None, gold: str) -> bool:
    """Math-Verify's judgement (second opinion). Its signal-based timeouts only work in the main thread."""
    if predicted is None:
        return False
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    timeout = 5 if main else None
    gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
    predicted_parsed = parse(f"${predicted}$", parsing_timeout=timeout)
    if not gold_parsed or not predicted_parsed:
        return False
    return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=timeout))


def gold_answer(row: dict) -> str:
    """The reference answer: the `answer` field (MATH-500), else the last \\boxed{} of `solution`."""
    if row.get("answer") not in (None, ""):
        return str(row["answer"])
    boxed = last_boxed(row.get("solution", ""))
    if boxed is None:
        raise ValueError("MATH row has neither an 'answer' field nor a \\boxed{} in 'solution'")
    return boxed


def load_tasks(data: str | None = None, limit: int | None = None) -> tuple[list[dict], dict]:
    """MATH test problems as tasks [{task_id, prompt, gold, level, type}] and a description of the data.

    Args:
        data: local JSONL with `problem` and `solution` (and/or `answer`); the 5,000-problem test
            file and MATH-500 both work. None loads the hub test split.
        limit: keep the first `limit` problems (file order).
    """
    if data:
        rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
        source = {"source": str(data), "file_sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest()}
    else:
        import datasets

        rows = list(datasets.load_dataset(HUB_ID, split="test"))
        source = {"source": f"hub:{HUB_ID}/test"}
    source["rows_in_file"] = len(rows)
    if limit is not None:
        rows = rows[:limit]
    tasks = []
    for index, row in enumerate(rows):
        problem = row.get("problem", row.get("instruction"))
        if problem is None:
            raise ValueError(f"{data or HUB_ID} row {index}: MATH rows need a 'problem' field")
        try:
            gold = gold_answer(row)
        except ValueError as err:
            raise ValueError(f"{data or HUB_ID} row {index}: {err}") from err
        tasks.append({"task_id": index, "prompt": format_prompt(problem), "gold": gold,
                      "level": row.get("level"), "type": row.get("type", row.get("subject"))})
    return tasks, source


def score_sample(task: dict, completion: str) -> dict:
    """Per-sample record fields: extracted answer, method, gold, correct (primary), math_verify."""
    extracted, method = extract_answer(completion)
    return {"extracted": extracted, "extraction": method, "gold": task["gold"],
            "correct": is_equiv(extracted, task["gold"]),
            "math_verify": math_verify_equiv(extracted, task["gold"])}
