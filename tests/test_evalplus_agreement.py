"""Our MBPP+ verdicts against evalplus 0.3.1's own, on the committed set of tests/evalplus_agreement_set.py.

CI grades a stratified part (every kind of program; the tasks with special oracles, re.Match results,
float tolerances and typed inputs); `python tests/evalplus_agreement_set.py grade` grades all 1,197
and writes fixtures/evalplus_agreement/agreement_full.json (committed).
"""

import json
from collections import Counter

import pytest
from evalplus_agreement_set import AGREEMENT, VERDICTS, build_set, compare, grade_with_balora, unstable_tasks

# Tasks whose grading has a special case in evalplus (special oracles, set comparison, re.Match
# presence, float tolerance, deserialised tuples / sets / complex inputs, no plus inputs).
SPECIAL_TASKS = {
    "Mbpp/2",
    "Mbpp/82",
    "Mbpp/115",
    "Mbpp/124",
    "Mbpp/164",
    "Mbpp/252",
    "Mbpp/295",
    "Mbpp/558",
    "Mbpp/581",
    "Mbpp/737",
    "Mbpp/787",
    "Mbpp/793",
    "Mbpp/794",
}


def stratified(programs: list[dict], verdicts: list[dict], per_kind: int = 2) -> list[int]:
    """Indices: every program of the special tasks, and the first `per_kind` others of each kind."""
    chosen, seen = [], {}
    unstable = unstable_tasks(verdicts)
    for i, (program, verdict) in enumerate(zip(programs, verdicts, strict=True)):
        if program["task_id"] in unstable:
            continue
        if program["task_id"] in SPECIAL_TASKS:
            chosen.append(i)
            continue
        key = (program["kind"], verdict["base"], verdict["plus"])  # passing and failing ones of each kind
        if seen.get(key, 0) < per_kind:
            seen[key] = seen.get(key, 0) + 1
            chosen.append(i)
    return chosen


@pytest.fixture(scope="module")
def agreement_set(shared_data):
    path = shared_data / "mbpp" / "MbppPlus.jsonl"
    programs = build_set(path)
    verdicts = [json.loads(line) for line in VERDICTS.read_text().splitlines()]
    assert [(p["task_id"], p["kind"]) for p in programs] == [(v["task_id"], v["kind"]) for v in verdicts]
    return path, programs, verdicts


def test_the_set_covers_every_kind_and_every_verdict(agreement_set):
    _, programs, verdicts = agreement_set
    assert len(programs) >= 1000
    assert {p["kind"] for p in programs} == {
        "canonical",
        "echo",
        "echo_fenced",
        "off_by_one",
        "none",
        "wrong_type",
        "partial",
        "slow",
        "slow_ok",
    }
    # evalplus's verdicts: base failed; base passed and plus failed; both passed — each >= 100 times
    classes = Counter((v["base"] == "pass", v["base"] == v["plus"] == "pass") for v in verdicts)
    assert min(classes[(False, False)], classes[(True, False)], classes[(True, True)]) >= 100, classes


def test_stratified_part_agrees_with_evalplus(agreement_set):
    path, programs, verdicts = agreement_set
    chosen = stratified(programs, verdicts)
    assert len(chosen) >= 60
    ours = grade_with_balora([programs[i] for i in chosen], path)
    disagreements = compare(ours, [verdicts[i] for i in chosen])
    assert disagreements == []


def test_whole_set_result_is_committed_and_agrees(agreement_set):
    _, _, verdicts = agreement_set
    report = json.loads(AGREEMENT.read_text())
    assert report["programs"] >= 1000 and report["disagreements"] == 0, report["rows"][:5]
    assert report["excluded_tasks"] == unstable_tasks(verdicts) and len(report["excluded_tasks"]) <= 10
    assert report["compared"] >= 1000
