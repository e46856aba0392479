"""NLG training data: loading (hub, local JSON/JSONL, embedded), the Alpaca prompt, response-only labels.

Shapes: B = batch, T = padded sequence length.
"""

from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from balora.repro.prompts import ANSWER_MARKER, format_prompt

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "BALORA_DATA_DIR"


def data_dir() -> Path:
    """The benchmark data folder: $BALORA_DATA_DIR, else data/ in the repository root.

    A relative $BALORA_DATA_DIR is taken from the repository root (the folder holding pyproject.toml
    above this package; the working directory for an installed package). scripts/fetch_data.py fills it.
    """
    package_parent = Path(__file__).resolve().parents[2]
    root = package_parent if (package_parent / "pyproject.toml").is_file() else Path.cwd()
    folder = Path(os.environ.get(DATA_DIR_ENV) or "data").expanduser()
    return folder if folder.is_absolute() else root / folder


IGNORE_INDEX = -100
EMBEDDED_ARITHMETIC = "embedded:arithmetic"

_SPLIT_RE = re.compile(r"^(?P<name>\w+)(\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


# --- loading -----------------------------------------------------------------------------------------
# Local files are read here rather than with datasets.load_dataset("json", split="train[:N]"): its
# errors name neither the file's line nor the row (malformed JSON, non-UTF-8 bytes, a row that is not an
# object), a missing field comes back as None, and its percent slices round round(pct * n / 100) where
# ours rounds round(pct / 100 * n): the two differ at some halves (train[:70%] of 45 rows: 32 vs 31), so
# switching would change which rows an existing split trains on. Absolute slices agree.


def parse_split(split: str) -> tuple[str, str | None, str | None]:
    """Parse 'train', 'train[:N]', 'train[a:b]' or 'train[:10%]' into (name, start, stop)."""
    match = _SPLIT_RE.match(split.replace(" ", ""))
    if not match:
        raise ValueError(
            f"Cannot parse data_split {split!r}; use e.g. 'train', 'train[:100000]', 'train[10:20]' or 'train[:5%]'"
        )
    return match["name"], match["start"], match["stop"]


def _slice_bounds(n: int, start: str | None, stop: str | None) -> tuple[int, int]:
    def resolve(text: str | None, default: int) -> int:
        if text is None:
            return default
        value = int(round(float(text[:-1]) / 100 * n)) if text.endswith("%") else int(text)
        return max(0, min(n, value if value >= 0 else n + value))

    return resolve(start, 0), resolve(stop, n)


def load_rows(
    data_path: str,
    data_split: str = "train",
    data_subset: str | None = None,
    num_embedded: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Load training rows as a list of dicts.

    Args:
        data_path: "embedded:arithmetic" (generated in code, offline), a local .json/.jsonl file, or a
            hub dataset id (e.g. "meta-math/MetaMathQA", "fxmeng/pissa-dataset").
        data_split: split with optional slicing, e.g. "train[:100000]".
        data_subset: hub sub-directory (fxmeng/pissa-dataset: "metamath", "python", "conversation").
        num_embedded: rows generated for the embedded dataset before slicing.
        seed: seed of the embedded generator.
    """
    name, start, stop = parse_split(data_split)
    if data_path == EMBEDDED_ARITHMETIC:
        rows = arithmetic_word_problems(num_embedded, seed=seed if name == "train" else seed + 10_000)
    elif Path(data_path).suffix in (".json", ".jsonl") or Path(data_path).exists():
        rows = _read_local(Path(data_path))
    else:
        from balora.repro import rehearsal

        try:
            rows = rehearsal.load_hub_dataset(data_path, split=name, data_dir=data_subset).to_list()
        except Exception as err:  # noqa: BLE001 - re-raised with the fix to apply
            raise OSError(  # a user error: one line and exit status 2 at the command line
                f"Could not load dataset {data_path!r} (split {name!r}{', subset ' + data_subset if data_subset else ''}) "
                f"from the hub: {err}. Offline? Pass a local .json/.jsonl file as --data_path."
            ) from err
    where = getattr(rows, "where", None) or [f"{data_path} row {i}" for i in range(len(rows))]
    lo, hi = _slice_bounds(len(rows), start, stop)
    rows = Rows(rows[lo:hi], where[lo:hi], data_path)
    if not rows:
        raise ValueError(f"No rows left in {data_path!r} after slicing with {data_split!r}")
    return rows


class Rows(list):
    """Data rows that remember where each one comes from, for error messages: `where[i]` is
    "<file>:<line>" (JSONL), "<file> row <i>" (JSON array) or "<data set> row <i>"."""

    def __init__(self, rows: list[dict[str, Any]], where: list[str], source: str):
        super().__init__(rows)
        self.where = where
        self.source = source


def _read_local(path: Path) -> Rows:
    import json

    if not path.exists():
        raise FileNotFoundError(f"Data file {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {err.start}: {err.reason}); re-encode the file as UTF-8"
        ) from None
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a .json data file must hold a list of objects")
        where = [f"{path} row {i}" for i in range(len(rows))]
    else:
        rows, where = [], []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_number}: malformed JSON line ({err.msg})") from err
            where.append(f"{path}:{line_number}")
    for row, place in zip(rows, where, strict=True):
        if not isinstance(row, dict):
            raise ValueError(
                f"{place}: a data row must be a JSON object, got {type(row).__name__} {row!r:.60}"
            )
    return Rows(rows, where, str(path))


def gsm8k_answer_to_metamath(answer: str) -> str:
    """Rewrite a GSM8K solution ending in '#### N' to MetaMathQA's 'The answer is: N' ending.

    The '<<48/2=24>>' calculator annotations are removed too: MetaMathQA responses do not have them.
    """
    if "####" not in answer:
        raise ValueError(f"Not a GSM8K answer (no '####'): {answer[-80:]!r}")
    body, final = answer.rsplit("####", 1)
    body = re.sub(r"<<[^>]*>>", "", body).rstrip()
    return f"{body}\n{ANSWER_MARKER}{final.strip()}"


# --- embedded data -----------------------------------------------------------------------------------

_NAMES = ["Tom", "Maria", "Ali", "Sara", "Ken", "Lena", "Omar", "Nina", "Paul", "Ivy"]
_ITEMS = ["apples", "books", "coins", "marbles", "pencils", "cookies", "stickers", "cards"]


def arithmetic_word_problems(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Templated arithmetic word problems with MetaMath-style "The answer is: N" responses (offline).

    Returns rows {"query": ..., "response": ..., "answer": "N"}; deterministic in (n, seed).
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        kind = rng.randrange(4)
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        if kind == 0:
            query = (
                f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
            )
            result, work = a + b, f"{name} has {a} + {b} = {a + b} {item}."
        elif kind == 1:
            a = a + b
            query = f"{name} had {a} {item} and gave away {b} of them. How many {item} are left?"
            result, work = a - b, f"{name} has {a} - {b} = {a - b} {item} left."
        elif kind == 2:
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            query = f"{name} buys {a} boxes with {b} {item} in each box. How many {item} does {name} buy?"
            result, work = a * b, f"{name} buys {a} * {b} = {a * b} {item}."
        else:
            b = rng.randint(2, 9)
            a = b * rng.randint(2, 12)
            query = (
                f"{name} shares {a} {item} equally among {b} friends. How many {item} does each friend get?"
            )
            result, work = a // b, f"Each friend gets {a} / {b} = {a // b} {item}."
        rows.append({"query": query, "response": f"{work}\n{ANSWER_MARKER}{result}", "answer": str(result)})
    return rows


# --- tokenisation ------------------------------------------------------------------------------------


def tokenize_examples(
    tokenizer, queries: list[str], responses: list[str], max_length: int
) -> list[dict[str, list[int]] | None]:
    """Tokenise prompt + response + EOS with labels on the response only (PiSSA/MetaMath style).

    The prompts and the full texts are tokenised separately (one batched call each) and the first
    len(prompt) labels of each example are masked with IGNORE_INDEX; the example is then cut to
    max_length tokens. An entry is None when truncation leaves no response token (the caller counts
    and reports these).
    """
    prompts = [format_prompt(query) for query in queries]
    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    full_ids = tokenizer([p + r for p, r in zip(prompts, responses, strict=True)], add_special_tokens=True)[
        "input_ids"
    ]
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    examples: list[dict[str, list[int]] | None] = []
    for prompt, full in zip(prompt_ids, full_ids, strict=True):
        full = (full + eos)[:max_length]
        labels = [IGNORE_INDEX] * min(len(prompt), len(full)) + full[len(prompt) :]
        examples.append(None if len(full) <= len(prompt) else {"input_ids": full, "labels": labels})
    return examples


def tokenize_example(tokenizer, query: str, response: str, max_length: int) -> dict[str, list[int]] | None:
    """One example of `tokenize_examples`: {input_ids, labels}, or None when no response token is left."""
    return tokenize_examples(tokenizer, [query], [response], max_length)[0]


def build_dataset(
    rows: list[dict[str, Any]],
    tokenizer,
    query_field: str,
    response_field: str,
    max_length: int,
    gsm8k_to_metamath: bool = False,
):
    """Tokenise rows into a `datasets.Dataset` with input_ids and labels (`tokenize_examples`, batched).

    Raises:
        KeyError: a row lacks the query or response field (names the row and the fields it has).
        ValueError: a query or response is not a string (names the file and line, or the row); every
            response is empty (the model would learn only to emit EOS); no example keeps a response
            token within max_length.
    """
    import datasets

    where = getattr(rows, "where", None) or [f"row {i}" for i in range(len(rows))]
    for index, row in enumerate(rows):
        for key in (query_field, response_field):
            if key not in row:
                raise KeyError(
                    f"Row {index} has no field {key!r} (fields: {sorted(row)}); "
                    f"set --query_field/--response_field"
                )
            if not isinstance(row[key], str):
                raise ValueError(f"{where[index]}: field {key!r} is {row[key]!r:.60}, not a string")
    empty = sum(not row[response_field].strip() for row in rows)
    if empty == len(rows):
        source = getattr(rows, "source", "the data")
        raise ValueError(
            f"{source}: all {len(rows)} responses (field {response_field!r}) are empty: the model "
            f"would learn only the end-of-sequence token; check --response_field"
        )
    if empty:
        logger.warning(
            "%d of %d responses are empty (the example teaches only the end-of-sequence token)",
            empty,
            len(rows),
        )

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        responses = batch["response"]
        if gsm8k_to_metamath:
            responses = [gsm8k_answer_to_metamath(response) for response in responses]
        kept = [
            e for e in tokenize_examples(tokenizer, batch["query"], responses, max_length) if e is not None
        ]
        return {"input_ids": [e["input_ids"] for e in kept], "labels": [e["labels"] for e in kept]}

    # Only the two validated string columns go to Arrow: other fields may mix types across rows. The
    # rows live in memory, so there is no cache file to reuse; the batched map drops the examples that
    # keep no response token (a batched map may return fewer rows than it was given).
    texts = datasets.Dataset.from_dict(
        {"query": [row[query_field] for row in rows], "response": [row[response_field] for row in rows]}
    )
    dataset = texts.map(tokenize, batched=True, remove_columns=texts.column_names, desc="Tokenising")
    dropped = len(rows) - len(dataset)
    if dropped:
        logger.warning(
            "%d of %d examples have no response token within max_length=%d and were skipped",
            dropped,
            len(rows),
            max_length,
        )
    if not len(dataset):
        raise ValueError(f"No example keeps a response token within max_length={max_length}")
    return dataset


@dataclass
class CausalLMCollator:
    """Right-pads input_ids with pad_token_id and labels with -100: (B, T) tensors.

    Not transformers.DataCollatorForSeq2Seq: that one pads on the tokenizer's current padding side,
    which generation sets to "left" on the same tokenizer object (its batches equal these only while
    the side is "right"), and it needs the tokenizer where callers here hold only the pad id.
    """

    pad_token_id: int

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
