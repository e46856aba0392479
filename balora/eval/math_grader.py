r"""MATH: data, answer extraction and grading (protocol "balora-math" v2).

Two readings of every completion are recorded; the reported score is the paper's.

Paper protocol (`accuracy`, the headline `score`): MetaMath's eval_math.py with its util.is_equiv,
which BA-LoRA's numbers follow, reproduced exactly (`extract_answer`, `is_equiv`):
  * the text after the LAST occurrence of exactly "The answer is: " (case and colon matter), cut at
    the first ".\n", stripped, one trailing "." dropped; no marker -> wrong (no \boxed{} fallback);
  * `is_equiv`: Hendrycks et al.'s `_strip_string` normalisation (MATH repository,
    modeling/math_equivalence.py) on both sides, then string equality; when the normalisation
    raises, the raw strings are compared. MetaMath's util.py copy differs from Hendrycks' in one
    place, kept here: `fix_a_slash_b` catches only AssertionError, so an "a/b" with a non-integer
    side ("\pi/2") makes the normalisation raise and the raw strings are compared.
  * The gold answer is the content of the last \boxed{} of the solution (MATH-500: `answer`).

Lenient reading (`accuracy_lenient`; not the paper's, reported beside it and labelled so):
  extraction = the first line after the last "The answer is" in any case, colon optional, a
  \boxed{} in it unwrapped, `$…$` dropped; else the last \boxed{} / \fbox{} of the completion
  (`extract_answer_lenient`). Equivalence (`is_equiv_lenient`) = Hendrycks' normalisation plus
  additions: bare "$" and "%", thin spaces, \displaystyle, "degrees"/"°", bmatrix == pmatrix,
  \text{unit} without a space, \text{(B)} -> (B), thousands separators ("1,000"), and numeric
  equality of plain numbers and simple fractions ("2.0" == "2", "-0.5" == "-\frac{1}{2}").
Second opinion: Math-Verify (`verify(parse(gold), parse(prediction))`, gold first) on the lenient
extraction, reported as `math_verify_score`, never mixed into either accuracy.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from fractions import Fraction
from pathlib import Path

from balora.repro.prompts import format_prompt

PROTOCOL = "balora-math"
# v1 scored the lenient reading as `score`; v2 scores MetaMath's reading and keeps the lenient one beside it.
PROTOCOL_VERSION = "2"
HUB_ID = "hendrycks/competition_math"
DATA_FILE = "math/test.jsonl"  # the same 5,000 test problems in the data folder (scripts/fetch_data.py)
_MARKER_RE = re.compile(r"the answer is\s*:?", re.IGNORECASE)
PAPER_MARKER = "The answer is: "
GRADING = {
    "score": "paper protocol (MetaMath eval_math.py + util.is_equiv, Hendrycks normalisation): text "
    "after the last 'The answer is: ' up to '.\\n'; same as `accuracy`",
    "accuracy_lenient": "NOT the paper's protocol: any-case 'the answer is' or the last \\boxed{}, "
    "normalisation with additions and numeric equality of plain numbers/fractions",
    "math_verify_score": "Math-Verify on the lenient extraction (second opinion)",
}


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
                return rest[start + 1 : position]
    return None  # unbalanced: the completion was cut off


def extract_answer_lenient(completion: str) -> tuple[str | None, str | None]:
    """The lenient reading: (answer, method) with method "marker" or "boxed", or (None, None)."""
    markers = list(_MARKER_RE.finditer(completion))
    if markers:
        segment = completion[markers[-1].end() :].strip().split("\n")[0].strip()
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


# --- the paper's reading: MetaMath eval_math.py + util.py (Hendrycks' normalisation) -------------
# Ported statement by statement, including which exceptions escape: an escaped exception makes
# is_equiv compare the raw strings, which changes some verdicts.


def extract_answer(completion: str) -> str | None:
    """The paper's extraction (MetaMath process_results), or None when "The answer is: " is absent."""
    pieces = completion.split(PAPER_MARKER)
    if len(pieces) < 2:
        return None
    answer = pieces[-1].split(".\n")[0].strip()
    if answer and answer[-1] == ".":
        answer = answer[:-1]
    return answer.strip()


def _paper_fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[0] == "{":  # IndexError on a trailing "\frac": escapes, as in MetaMath
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


def _paper_fix_a_slash_b(string: str) -> str:
    if len(string.split("/")) != 2:
        return string
    a, b = string.split("/")
    a_int, b_int = int(a), int(b)  # ValueError escapes (MetaMath catches only AssertionError)
    if string != f"{a_int}/{b_int}":
        return string
    return "\\frac{" + str(a_int) + "}{" + str(b_int) + "}"


def _paper_remove_right_units(string: str) -> str:
    # "\text{ " only ever occurs (at least in the val set) when describing units (Hendrycks)
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        if len(splits) != 2:
            raise ValueError("more than one '\\text{ ' unit")  # an AssertionError in the original
        return splits[0]
    return string


def _paper_fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split[0] != "{":  # IndexError on a trailing "\sqrt": escapes, as in the original
            new_string += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new_string += "\\sqrt" + split
    return new_string


def strip_string(string: str) -> str:
    """Hendrycks' `_strip_string` as MetaMath's util.py has it (may raise: see is_equiv)."""
    string = string.replace("\n", "")
    string = string.replace("\\!", "")
    string = string.replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = _paper_remove_right_units(string)
    string = string.replace(
        "\\%", ""
    )  # only "\%": a bare "%" stays (the original's two lines both remove "\%")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    # "k = 5" -> "5" when the left-hand side (spaces included) has at most two characters
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    string = _paper_fix_sqrt(string)
    string = string.replace(" ", "")
    string = _paper_fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    string = _paper_fix_a_slash_b(string)
    return string


def is_equiv(predicted: str | None, gold: str | None) -> bool:
    """The paper's equivalence (MetaMath util.is_equiv): normalised strings equal; raw strings if it raises."""
    if predicted is None and gold is None:
        return True
    if predicted is None or gold is None:
        return False
    try:
        return strip_string(predicted) == strip_string(gold)
    except Exception:  # noqa: BLE001 - the original compares the raw strings when normalisation fails
        return predicted == gold


# --- lenient normalisation: Hendrycks' (math_equivalence.py) with additions marked "added" ---------


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


def strip_string_lenient(string: str) -> str:
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


def is_equiv_lenient(predicted: str | None, gold: str) -> bool:
    """The lenient equivalence: normalisation with additions, then string or numeric equality."""
    if predicted is None:
        return False
    try:
        a, b = strip_string_lenient(predicted), strip_string_lenient(gold)
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
            file and MATH-500 both work. None loads the hub test split (removed from the hub in 2025:
            outside the rehearsal's stand-in, pass the file that scripts/fetch_data.py writes).
        limit: keep the first `limit` problems (file order).
    """
    if data:
        rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
        source = {"source": str(data), "file_sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest()}
    else:
        from balora.eval.data import hub_errors
        from balora.repro import rehearsal

        # hendrycks/competition_math was taken off the hub after a DMCA notice (January 2025).
        with hub_errors(HUB_ID, DATA_FILE, note="The dataset was taken off the hub in January 2025."):
            rows = list(rehearsal.load_hub_dataset(HUB_ID, split="test"))
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
        tasks.append(
            {
                "task_id": index,
                "prompt": format_prompt(problem),
                "gold": gold,
                "level": row.get("level"),
                "type": row.get("type", row.get("subject")),
            }
        )
    return tasks, source


def score_sample(task: dict, completion: str) -> dict:
    """Per-sample record fields: both readings (the paper's is `correct`) and Math-Verify's opinion.

    `extracted`/`correct`: the paper's reading (`extraction` is "marker" or None);
    `extracted_lenient`/`extraction_lenient`/`correct_lenient`: the lenient one; `math_verify`:
    Math-Verify on the lenient extraction.
    """
    extracted = extract_answer(completion)
    lenient, method = extract_answer_lenient(completion)
    return {
        "extracted": extracted,
        "extraction": "marker" if extracted is not None else None,
        "gold": task["gold"],
        "correct": is_equiv(extracted, task["gold"]),
        "extracted_lenient": lenient,
        "extraction_lenient": method,
        "correct_lenient": is_equiv_lenient(lenient, task["gold"]),
        "math_verify": math_verify_equiv(lenient, task["gold"]),
    }
