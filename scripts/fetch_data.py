"""Fill the benchmark data folder and verify it against data/SHA256SUMS.

    python scripts/fetch_data.py                      # download every file from its pinned public source
    python scripts/fetch_data.py --from DIR           # copy from a local folder of the same layout (offline)
    python scripts/fetch_data.py --check              # only verify the files already there
    python scripts/fetch_data.py --rewrite-provenance results/mini/nlg --data_dir DIR

The folder is $BALORA_DATA_DIR, default data/ in the repository root (a relative path is taken from the
repository root); its contents are git-ignored, data/SHA256SUMS is committed. Layout (22 MB):
glue/{SST-2,CoLA,MRPC,RTE,STS-B}/{train,dev}.tsv and glue/QNLI/dev.tsv (the original GLUE TSVs),
gsm8k/{train,test}.jsonl, math/{test,math500_test}.jsonl, mbpp/{mbpp.jsonl,sanitized-mbpp.json,
MbppPlus.jsonl}, mt_bench/{question.jsonl,judge_prompts.jsonl,reference_answer/gpt-4.jsonl}.

Each file comes byte for byte from a GitHub repository at a pinned commit (raw.githubusercontent.com;
the hub copies of these data sets are re-encoded, so their bytes would not match the sums). Two files are
derived from their source, as documented in SOURCES: glue/MRPC/train.tsv is rebuilt the way GLUE's
download_glue_data.py (format_mrpc) builds it, because the stored train.tsv of that repository lacks one
pair; mbpp/MbppPlus.jsonl is EvalPlus MBPP+ v0.1.0 turned from a JSON array into JSONL. A file is only
put in place once its sha256 matches the manifest; files already present and matching are kept.

--rewrite-provenance PATH...: results record the data files they read (config.yaml, run.json,
eval/<bench>.json, Markdown). A run made with BALORA_DATA_DIR elsewhere records that folder's path;
this rewrites every such path under PATH (files or folders; .json, .jsonl, .yaml, .md) to the
data-dir-relative form data/<file>, which names the same file (its sha256 is recorded beside it) and is
what a run with the default folder records. The folder to rewrite is --data_dir (default
$BALORA_DATA_DIR), as given and as an absolute path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = REPO_ROOT / "data" / "SHA256SUMS"
DATA_DIR_ENV = "BALORA_DATA_DIR"
DEFAULT_DATA_DIR = "data"  # relative to the repository root; also the prefix results record
PROVENANCE_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".md")

# Pinned source commits (owner/repo, commit): see the provenance notes of each source below.
GLUE = (
    "F0restL1n/BERT",
    "0d0288be08079531c7b3a85af3d532f9adb0f13a",
)  # output of GLUE's download_glue_data.py
GSM8K = ("openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c")  # the release files
MATH = ("dipperwang5/assignment5-alignment", "7e73b3056fb83c83e28bd36c6d459f8df8a5fe42")  # MATH test, 5,000
MATH500 = ("MobileLLM/BudgetThinker", "f0466b9d37595f46603387baa5930e312fefb7f5")  # HuggingFaceH4/MATH-500
MBPP = ("patdfb/TPC-EES", "0f4e84d313671e09268aecb804d0e99062980869")  # google-research MBPP files
MBPP_PLUS = (
    "mrigankpawagi/PropertyEval",
    "5a76b668193dbaa07cc66372bef786245c77e8b3",
)  # EvalPlus MBPP+ v0.1.0
FASTCHAT = ("lm-sys/FastChat", "0e6d3e4beaab66f4d3f93db72541a4abab8af28d")  # MT-Bench data of llm_judge


def raw_url(repo: tuple[str, str], path: str) -> str:
    """The raw.githubusercontent.com address of `path` in `repo` = (owner/name, commit)."""
    return f"https://raw.githubusercontent.com/{repo[0]}/{repo[1]}/{path}"


def format_mrpc(train_txt: bytes, dev_ids: bytes) -> bytes:
    """GLUE's format_mrpc: the header, then every pair of msr_paraphrase_train.txt not in dev_ids.tsv.

    Args:
        train_txt: msr_paraphrase_train.txt (UTF-8 with BOM header line, 4,076 pairs).
        dev_ids: dev_ids.tsv (one "id1<TAB>id2" line per dev pair).
    Returns:
        train.tsv as bytes: the header line unchanged, then "label\\tid1\\tid2\\ts1\\ts2\\n" per pair.
    """
    dev = {tuple(line.strip().split("\t")) for line in dev_ids.decode("utf-8").splitlines() if line.strip()}
    header, *rows = train_txt.decode("utf-8").splitlines(keepends=True)
    out = [header]
    for row in rows:
        if not row.strip():
            continue
        label, id1, id2, s1, s2 = row.strip().split("\t")
        if (id1, id2) not in dev:
            out.append(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")
    return "".join(out).encode("utf-8")


def json_array_lines_to_jsonl(array: bytes) -> bytes:
    """A JSON array written one element per line becomes JSONL: indentation and trailing commas dropped."""
    lines = [line.strip() for line in array.decode("utf-8").splitlines()]
    items = [line.removesuffix(",") for line in lines if line not in ("", "[", "]")]
    for line in items:  # one complete value per line, or this is not the layout this function handles
        json.loads(line)
    return "".join(f"{line}\n" for line in items).encode("utf-8")


@dataclass(frozen=True)
class Source:
    """Where one data file comes from: raw URLs, and how their bytes become the file (default: the one URL)."""

    urls: tuple[str, ...]
    derive: Callable[..., bytes] | None = None


def _glue(task: str, split: str) -> Source:
    return Source((raw_url(GLUE, f"glue_data/{task}/{split}.tsv"),))


SOURCES: dict[str, Source] = {
    **{
        f"glue/{task}/{split}.tsv": _glue(task, split)
        for task in ("SST-2", "CoLA", "RTE", "STS-B")
        for split in ("train", "dev")
    },
    "glue/MRPC/dev.tsv": _glue("MRPC", "dev"),
    # DERIVED: that repository's glue_data/MRPC/train.tsv has 3,667 of GLUE's 3,668 pairs (it lacks
    # 2750203/2750153); rebuilt from the raw MSRP file and dev_ids.tsv of the same commit.
    "glue/MRPC/train.tsv": Source(
        (
            raw_url(GLUE, "glue_data/MRPC/msr_paraphrase_train.txt"),
            raw_url(GLUE, "glue_data/MRPC/dev_ids.tsv"),
        ),
        format_mrpc,
    ),
    "glue/QNLI/dev.tsv": _glue("QNLI", "dev"),
    "gsm8k/train.jsonl": Source((raw_url(GSM8K, "grade_school_math/data/train.jsonl"),)),
    "gsm8k/test.jsonl": Source((raw_url(GSM8K, "grade_school_math/data/test.jsonl"),)),
    "math/test.jsonl": Source((raw_url(MATH, "data/math/test.jsonl"),)),
    "math/math500_test.jsonl": Source((raw_url(MATH500, "evaluation/data/math500/test_ori.jsonl"),)),
    "mbpp/mbpp.jsonl": Source((raw_url(MBPP, "mbpp/mbpp.jsonl"),)),
    "mbpp/sanitized-mbpp.json": Source((raw_url(MBPP, "mbpp/sanitized-mbpp.json"),)),
    # DERIVED: the EvalPlus MBPP+ v0.1.0 tasks (399) as a JSON array, one task per line -> JSONL.
    "mbpp/MbppPlus.jsonl": Source(
        (raw_url(MBPP_PLUS, "autogen/samples/mbppplus.json"),), json_array_lines_to_jsonl
    ),
    "mt_bench/question.jsonl": Source(
        (raw_url(FASTCHAT, "fastchat/llm_judge/data/mt_bench/question.jsonl"),)
    ),
    "mt_bench/judge_prompts.jsonl": Source(
        (raw_url(FASTCHAT, "fastchat/llm_judge/data/judge_prompts.jsonl"),)
    ),
    "mt_bench/reference_answer/gpt-4.jsonl": Source(
        (raw_url(FASTCHAT, "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl"),)
    ),
}


class DataError(RuntimeError):
    """A data file is missing, cannot be fetched, or does not match the manifest."""


def data_dir(value: str | None = None) -> Path:
    """The data folder: `value`, else $BALORA_DATA_DIR, else data/; a relative path is from the repo root."""
    path = Path(value or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def read_manifest(path: Path = MANIFEST) -> dict[str, str]:
    """`sha256sum` format ("<sha256>  <relative path>" per line) -> {relative path: sha256}."""
    sums = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, rel = line.partition("  ")
        if len(digest) != 64 or not rel:
            raise DataError(f"{path}:{number}: expected '<sha256>  <path>', got {line!r}")
        sums[rel] = digest
    return sums


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def problems(root: Path, sums: dict[str, str]) -> dict[str, str]:
    """{relative path: what is wrong} for every manifest file under `root` that is missing or differs."""
    found = {}
    for rel, digest in sums.items():
        path = root / rel
        if not path.is_file():
            found[rel] = "missing"
        elif sha256(path) != digest:
            found[rel] = f"sha256 {sha256(path)} differs from the manifest's {digest}"
    return found


def _install(data: bytes, rel: str, digest: str, dest: Path, origin: str) -> None:
    """Write `data` to dest/rel (atomically) if its sha256 is the manifest's, else raise naming the file."""
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise DataError(
            f"{rel}: the file from {origin} has sha256 {got}, the manifest (data/SHA256SUMS) "
            f"expects {digest}; it was not installed. Check that the source is the one named in "
            "scripts/fetch_data.py, or copy a verified file with --from DIR."
        )
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o644)  # NamedTemporaryFile makes 0600 files
    os.replace(tmp.name, target)


def download(url: str, timeout: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https URLs
            return response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise DataError(
            f"could not download {url}: {err}. Offline? Copy the files from a folder of the same "
            "layout with: python scripts/fetch_data.py --from DIR"
        ) from err


def fetch(rel: str, digest: str, dest: Path) -> None:
    """Download one manifest file from its pinned source into dest (derived files are rebuilt)."""
    source = SOURCES.get(rel)
    if source is None:
        raise DataError(
            f"{rel}: no source is known for this manifest entry; add it to SOURCES in "
            "scripts/fetch_data.py or copy it with --from DIR"
        )
    parts = [download(url) for url in source.urls]
    data = source.derive(*parts) if source.derive else parts[0]
    _install(data, rel, digest, dest, " + ".join(source.urls))


def copy_from(rel: str, digest: str, dest: Path, origin: Path) -> None:
    """Copy one manifest file from origin/rel into dest, verifying it first."""
    path = origin / rel
    if not path.is_file():
        raise DataError(
            f"{rel}: not found in {origin} (expected {path}); that folder must have the layout of "
            "data/SHA256SUMS, or download the file with: python scripts/fetch_data.py"
        )
    _install(path.read_bytes(), rel, digest, dest, str(path))


def fill(
    dest: Path, sums: dict[str, str], origin: Path | None = None, log: Callable[[str], None] = print
) -> list[str]:
    """Put every manifest file into dest (from origin, else from its source); returns the files installed."""
    if origin is not None and origin.resolve() == dest.resolve():
        raise DataError(f"--from {origin} is the data folder itself; to verify it use --check")
    installed = []
    todo = problems(dest, sums)
    for rel in sums:
        if rel not in todo:
            continue
        log(
            f"[{'copy' if origin else 'get '}] {rel}"
            + ("" if todo[rel] == "missing" else " (replacing: differs)")
        )
        if origin is not None:
            copy_from(rel, sums[rel], dest, origin)
        else:
            fetch(rel, sums[rel], dest)
        installed.append(rel)
    log(f"{dest}: {len(sums)} files verified against data/SHA256SUMS ({len(installed)} installed)")
    return installed


def _prefixes(root: Path, given: str | None) -> list[str]:
    """The spellings of the data folder that recorded paths may start with, longest first."""
    spellings = {str(root), os.path.abspath(root), str(root.resolve())}
    if given:
        spellings.add(given.rstrip("/").removeprefix("./") or ".")
    spellings.discard(DEFAULT_DATA_DIR)
    return sorted(spellings, key=len, reverse=True)


def rewrite_provenance(paths: Iterable[Path], root: Path, given: str | None = None) -> list[Path]:
    """Rewrite recorded paths under the data folder `root` to data/<file> in result files; returns those changed.

    Args:
        paths: result files or folders (searched recursively for .json, .jsonl, .yaml, .yml, .md files).
        root: the data folder the runs read (absolute).
        given: the folder as the runs were told it (e.g. a relative $BALORA_DATA_DIR), also rewritten.
    """
    prefixes = _prefixes(root, given)
    if not prefixes:
        return []
    # A prefix counts only as a whole path component: not inside a longer path, followed by "/" or the end.
    pattern = re.compile(r"(?<![\w.~/-])(?:" + "|".join(map(re.escape, prefixes)) + r")(?=/|(?![\w.-]))")
    changed = []
    for top in paths:
        if not top.exists():
            raise DataError(f"--rewrite-provenance {top}: no such file or folder")
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            if path.suffix not in PROVENANCE_SUFFIXES:
                continue
            text = path.read_bytes().decode("utf-8")  # bytes: line endings stay as they are
            new = pattern.sub(DEFAULT_DATA_DIR, text)
            if new != text:
                path.write_bytes(new.encode("utf-8"))
                changed.append(path)
    return changed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fetch_data.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help=f"the data folder (default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}/ in the repository root)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--from",
        dest="origin",
        metavar="DIR",
        default=None,
        help="copy the files from DIR (same layout) instead of downloading them; verified too",
    )
    mode.add_argument(
        "--check", action="store_true", help="only verify the files in the data folder; change nothing"
    )
    mode.add_argument(
        "--rewrite-provenance",
        dest="rewrite",
        nargs="+",
        metavar="PATH",
        default=None,
        help="rewrite paths under the data folder recorded in result files under PATH to data/<file>",
    )
    parser.add_argument(
        "--manifest", default=str(MANIFEST), help="sha256 manifest (default: data/SHA256SUMS)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = data_dir(args.data_dir)
    try:
        if args.rewrite is not None:
            given = args.data_dir or os.environ.get(DATA_DIR_ENV)
            changed = rewrite_provenance([Path(p) for p in args.rewrite], root, given)
            print(f"rewrote data paths to {DEFAULT_DATA_DIR}/... in {len(changed)} files")
            return 0
        sums = read_manifest(Path(args.manifest))
        if args.check:
            wrong = problems(root, sums)
            for rel, what in wrong.items():
                print(f"[bad ] {root / rel}: {what}", file=sys.stderr)
            if wrong:
                print(
                    f"error: {len(wrong)} of {len(sums)} data files missing or different in {root}; run "
                    "python scripts/fetch_data.py (or --from DIR with a verified copy)",
                    file=sys.stderr,
                )
                return 1
            print(f"{root}: all {len(sums)} files match data/SHA256SUMS")
            return 0
        fill(root, sums, Path(args.origin).expanduser() if args.origin else None)
        return 0
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
