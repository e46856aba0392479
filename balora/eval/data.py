"""Where an evaluator's benchmark file comes from: --data, else the data folder, else the hub.

The data folder is $BALORA_DATA_DIR (default data/; scripts/fetch_data.py fills it, with the layout
of data/SHA256SUMS). Its files are the released originals (GSM8K's test.jsonl, MBPP's mbpp.jsonl, ...),
the same problems in the same order as the hub copies, so an offline machine with the folder filled
evaluates without network. During a rehearsal (BALORA_REHEARSAL=1) the folder is skipped: the hub
dataset's small stand-in is read instead, the same on every machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from balora.repro import rehearsal
from balora.repro.data import DATA_DIR_ENV, data_dir


def benchmark_file(data: str | None, relative: str) -> str | None:
    """The local file to read: `data` when given, else <data folder>/`relative` when it is there.

    Returns:
        A path, or None when the hub dataset (or its stand-in in a rehearsal) is to be loaded.
    """
    if data:
        return data
    if rehearsal.active():
        return None
    candidate = data_dir() / relative
    return str(candidate) if candidate.is_file() else None


@contextlib.contextmanager
def hub_errors(hub_id: str, relative: str, note: str = "") -> Iterator[None]:
    """Turn a failed hub download into one FileNotFoundError that says how to evaluate offline.

    The hub raises many different types (offline mode, no network, a gated or removed dataset).

    Args:
        hub_id: the dataset being loaded.
        relative: its file in the data folder (e.g. "gsm8k/test.jsonl").
        note: a sentence added to the message (e.g. why the dataset is not on the hub).
    """
    try:
        yield
    except Exception as err:  # noqa: BLE001 - re-raised with the fix to apply
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise FileNotFoundError(
            f"no --data given, {data_dir() / relative} not found, and the hub dataset {hub_id} could not be "
            f"loaded ({reason[:300]}).{' ' + note if note else ''} Pass --data FILE, or fill the data folder (${DATA_DIR_ENV}, default "
            "data/) with: python scripts/fetch_data.py"
        ) from err
