"""A set of MBPP+ completions graded by evalplus 0.3.1 itself, to hold our grader to its verdicts.

    python tests/evalplus_agreement_set.py verdicts   # evalplus's verdicts -> fixtures/evalplus_agreement/
    python tests/evalplus_agreement_set.py grade      # the whole set through our grader, compared

Programs (deterministic, from MbppPlus.jsonl): for each of the 399 tasks the canonical solution, and
two of eight variants in rotation: the prompt echoed before the canonical body (raw and fenced), an
off-by-one answer, None, a wrong type, a partial solution (right for as many calls as the task has base
inputs, then None),
a slow one (3 s on its first call) and a slow but fast-enough one (5 ms per call). 1,197 programs.

`verdicts` runs the official pipeline on each completion (PiSSA's code_process.py, then evalplus's
solution = prompt + completion) and grades the solution with evalplus's own code: `get_mbpp_plus`
(through MBPP_OVERRIDE_PATH), `trusted_exec` for the expected outputs and times (as `get_groundtruth`),
and `untrusted_check` on the base and the plus inputs (as `check_correctness`, fast_check=True), run in
a plain subprocess each: evalplus's unsafe path, with its reliability guard and no sandbox.
`grade` grades the same completions with balora.eval.code (extraction "paper") in our sandbox and
writes the comparison to fixtures/evalplus_agreement/agreement_full.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "evalplus_agreement"
VERDICTS = FIXTURE / "verdicts.jsonl"
AGREEMENT = FIXTURE / "agreement_full.json"
KINDS = ("echo", "echo_fenced", "off_by_one", "none", "wrong_type", "partial", "slow", "slow_ok")

_SHARED: dict = {}

_WRAPPED = """

_balora_reference = {entry}
_balora_calls = [0]


def _balora_off_by_one(out):
    if isinstance(out, bool):
        return not out
    if isinstance(out, (int, float)):
        return out + 1
    if isinstance(out, str):
        return out + "x"
    if isinstance(out, (list, tuple)) and out:
        return out[:-1]
    return [out]


def {entry}(*args):
    _balora_calls[0] += 1
{body}
"""
_BODIES = {
    "off_by_one": "    return _balora_off_by_one(_balora_reference(*args))",
    "none": "    return None",
    "wrong_type": "    out = _balora_reference(*args)\n    return tuple(out) if isinstance(out, list) else [out]",
    "partial": "    out = _balora_reference(*args)\n    return out if _balora_calls[0] <= {n_base} else None",
    "slow": "    if _balora_calls[0] == 1:\n        time.sleep(3)\n    return _balora_reference(*args)",
    "slow_ok": "    time.sleep(0.005)\n    return _balora_reference(*args)",
}


def mbpp_plus_path() -> Path:
    data = Path(os.environ.get("BALORA_DATA_DIR") or HERE.parent.parent / "shared" / "data")
    return data / "mbpp" / "MbppPlus.jsonl"


def completion(row: dict, kind: str) -> str:
    """The completion of one program of the set (`row`: a MbppPlus.jsonl task)."""
    canonical = row["canonical_solution"]
    if kind == "canonical":
        return canonical
    if kind == "echo":
        return row["prompt"] + canonical
    if kind == "echo_fenced":
        return f"Here is the function:\n```python\n{row['prompt']}{canonical}```\nIt returns the answer."
    body = _BODIES[kind].replace("{n_base}", str(len(row["base_input"])))
    head = "import time\n" if kind.startswith("slow") else ""
    return head + canonical + _WRAPPED.format(entry=row["entry_point"], body=body)


def build_set(path: Path | None = None) -> list[dict]:
    """[{task_id, kind, completion}]: the canonical solution and two variants per task."""
    rows = [json.loads(line) for line in (path or mbpp_plus_path()).read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: int(r["task_id"].split("/")[1]))
    programs = []
    for i, row in enumerate(rows):
        for kind in ("canonical", KINDS[(2 * i) % len(KINDS)], KINDS[(2 * i + 1) % len(KINDS)]):
            programs.append({"task_id": row["task_id"], "kind": kind, "completion": completion(row, kind)})
    return programs


def evalplus_verdicts(programs: list[dict], path: Path, workers: int) -> list[dict]:
    """Grade with evalplus 0.3.1's own loader, ground truth and `untrusted_check` (base, then plus)."""
    os.environ["MBPP_OVERRIDE_PATH"] = str(path)  # read by evalplus.data.mbpp at import
    from concurrent.futures import ProcessPoolExecutor

    from evalplus.data import get_mbpp_plus
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    from balora.eval.code import extract_code_paper

    problems = get_mbpp_plus()
    truth = {}
    for task_id, problem in problems.items():  # evalplus.evaluate.get_groundtruth, without its cache
        oracle = {}
        for part in ("base", "plus"):
            oracle[part], oracle[f"{part}_time"] = trusted_exec(
                problem["prompt"] + problem["canonical_solution"],
                problem[f"{part}_input"],
                problem["entry_point"],
                record_time=True,
                output_not_none=problem["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS,
            )
        truth[task_id] = oracle
    # The pool's processes are forked: they inherit the problems and ground truth (hundreds of MB for
    # Mbpp/255) instead of receiving them with every job.
    _SHARED.update(problems=problems, truth=truth)
    jobs = [
        (p["task_id"], problems[p["task_id"]]["prompt"] + extract_code_paper(p["completion"]))
        for p in programs
    ]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_check_correctness, jobs, chunksize=4))
    return [
        {"task_id": p["task_id"], "kind": p["kind"], "base": base, "plus": plus}
        for p, (base, plus) in zip(programs, results, strict=True)
    ]


def _check_correctness(job) -> tuple[str, str]:
    """evalplus.evaluate.check_correctness (fast_check=True), with evalplus's defaults."""
    from evalplus.eval import untrusted_check

    task_id, solution = job
    problem, truth = _SHARED["problems"][task_id], _SHARED["truth"][task_id]
    stats = []
    for part in ("base", "plus"):
        stat, _ = untrusted_check(
            "mbpp",
            solution,
            problem[f"{part}_input"],
            problem["entry_point"],
            expected=truth[part],
            atol=problem["atol"],
            ref_time=truth[f"{part}_time"],
            fast_check=True,
        )
        stats.append(stat)
    return stats[0], stats[1]


def grade_with_balora(
    programs: list[dict], path: Path, workers: int | None = None, extraction: str = "paper"
) -> list[dict]:
    """Our verdicts on the same completions (extraction "paper" by default), in the sandbox."""
    from balora.eval import code
    from balora.eval.sandbox import SandboxLimits

    tasks, _ = code.load_mbpp(str(path))
    by_id = {f"Mbpp/{t['task_id']}": t for t in tasks}
    rows = code.grade_programs(
        [(by_id[p["task_id"]], p["completion"]) for p in programs],
        code.mbpp_program,
        SandboxLimits(),
        workers,
        plus_limits=code.CodeArguments().plus_limits(),
        extraction=extraction,
    )
    return [
        {
            "task_id": p["task_id"],
            "kind": p["kind"],
            "base": row["correct"],
            "plus": row["correct_plus"],
            "error": row.get("error") or row.get("error_plus") or "",
        }
        for p, row in zip(programs, rows, strict=True)
    ]


def _canonical_rows(path: Path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: int(r["task_id"].split("/")[1]))
    return [({"task_id": row["task_id"]}, row) for row in rows]


def unstable_tasks(verdicts: list[dict]) -> dict[str, str]:
    """Tasks whose verdicts evalplus itself does not reproduce on this machine, with the reason: its
    own run failed the canonical solution's plus inputs (the expected outputs are that solution's
    outputs, so only a time limit can fail it: max(1 s, 4 x the canonical's time measured while
    computing the ground truth), which depends on the machine's load at both moments)."""
    return {
        v[
            "task_id"
        ]: f"evalplus failed the canonical solution on the plus inputs ({v['plus']}): time limits under load"
        for v in verdicts
        if v["kind"] == "canonical" and v["base"] == "pass" and v["plus"] != "pass"
    }


def compare(ours: list[dict], theirs: list[dict], skip: set[str] = frozenset()) -> list[dict]:
    """Rows where a verdict differs (evalplus: base = "pass", plus = base and plus both "pass"),
    leaving out the tasks in `skip`."""
    out = []
    for mine, ref in zip(ours, theirs, strict=True):
        assert (mine["task_id"], mine["kind"]) == (ref["task_id"], ref["kind"])
        if ref["task_id"] in skip:
            continue
        base = ref["base"] == "pass"
        plus = base and ref["plus"] == "pass"
        if (mine["base"], mine["plus"]) != (base, plus):
            out.append({**ref, "ours_base": mine["base"], "ours_plus": mine["plus"], "error": mine["error"]})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("verdicts", "grade"))
    parser.add_argument("--data", default=None, help="MbppPlus.jsonl (default: $BALORA_DATA_DIR/mbpp/)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kinds", nargs="+", default=None, help="verdicts: recompute these kinds only")
    args = parser.parse_args(argv)
    path = Path(args.data) if args.data else mbpp_plus_path()
    programs = build_set(path)
    start = time.time()
    if args.action == "verdicts":
        if args.kinds:  # refresh the rows of some kinds in the committed file
            old = [json.loads(line) for line in VERDICTS.read_text().splitlines()]
            redo = [i for i, p in enumerate(programs) if p["kind"] in args.kinds]
            for i, verdict in zip(
                redo, evalplus_verdicts([programs[i] for i in redo], path, args.workers), strict=True
            ):
                old[i] = verdict
            verdicts = old
        else:
            verdicts = evalplus_verdicts(programs, path, args.workers)
        FIXTURE.mkdir(parents=True, exist_ok=True)
        VERDICTS.write_text("".join(json.dumps(v) + "\n" for v in verdicts))
        print(f"{len(verdicts)} evalplus verdicts -> {VERDICTS} ({time.time() - start:.0f} s)")
        return 0
    ours = grade_with_balora(programs, path, args.workers)
    theirs = [json.loads(line) for line in VERDICTS.read_text().splitlines()]
    unstable = unstable_tasks(theirs)
    disagreements = compare(ours, theirs, set(unstable))
    from balora.repro.provenance import collect

    report = {
        "programs": len(programs),
        "compared": sum(p["task_id"] not in unstable for p in programs),
        "excluded_tasks": unstable,
        "disagreements": len(disagreements),
        "disagreements_in_excluded_tasks": len(compare(ours, theirs)) - len(disagreements),
        "rows": disagreements,
        "ours_base_passed": sum(r["base"] for r in ours),
        "ours_plus_passed": sum(r["plus"] for r in ours),
        "canonical_base_passed": sum(r["base"] for r in ours if r["kind"] == "canonical"),
        "canonical_plus_passed": sum(r["plus"] for r in ours if r["kind"] == "canonical"),
        "wall_s": round(time.time() - start, 1),
        "provenance": collect(None, start),
    }
    # MBPP+ canonical: the program prompt + canonical solution itself (a prompt-echoing completion,
    # which our extraction keeps whole), base and plus.
    echoes = [
        {**p, "kind": "echo", "completion": completion(row, "echo")} for p, row in _canonical_rows(path)
    ]
    canonical = grade_with_balora(echoes, path, args.workers, extraction="balora")
    report["canonical_program"] = {
        "programs": len(canonical),
        "base_passed": sum(r["base"] for r in canonical),
        "plus_passed": sum(r["plus"] for r in canonical),
        "failed": [r for r in canonical if not r["plus"]],
    }
    report["wall_s"] = round(time.time() - start, 1)
    AGREEMENT.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(
        f"{len(programs)} programs, {len(disagreements)} disagreements with evalplus; MBPP+ canonical "
        f"{report['canonical_program']['base_passed']}/{len(echoes)} base, {report['canonical_program']['plus_passed']}/{len(echoes)} "
        f"plus -> {AGREEMENT}"
    )
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
