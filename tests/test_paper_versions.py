"""results/paper/: every stored table names its paper version and recipe; our tables say which they compare with."""

import json
import statistics

import pytest
from test_results import md_row, write_run  # noqa: E402

import aggregate_results
from balora.repro import results as R

PAPER_FILES = (
    "nlg_table.json",
    "nlu_table.json",
    "nlg_table_iclr2026.json",
    "nlu_table_iclr2026.json",
    "ablation.json",
    "ablation_glue.json",
    "rank_sweep.json",
    "noisy_pretraining.json",
    "imbalanced_mnli.json",
    "nlu_diversity.json",
)


@pytest.mark.parametrize("name", PAPER_FILES)
def test_every_paper_file_names_its_version_and_recipe(repo_root, name):
    payload = json.loads((repo_root / "results" / "paper" / name).read_text())
    assert payload["version"] and payload["recipe"] and payload["source"]
    assert payload["preset"] in ("iclr2026", "v5") and isinstance(payload["complete"], bool)
    for row in payload.get("rows", []):
        assert all(v is None or isinstance(v, (int, float)) for v in row["values"].values())


def test_published_numbers_are_stored(repo_root):
    paper = repo_root / "results" / "paper"
    ablation = R.load_paper_table(paper / "ablation.json")
    by = {(r["group"], r["method"]): r["values"] for r in ablation["rows"]}
    assert {g for g, _ in by} == {"LLaMA-2-7B", "Mistral-7B", "Gemma-7B"}  # the model dimension
    assert by[("LLaMA-2-7B", "w/o reg (PiSSA)")] == {"GSM8K": 52.01, "MATH": 7.76}
    assert by[("Gemma-7B", "BA-LoRA (all three)")] == {"GSM8K": 78.13, "MATH": 32.25}
    glue = R.load_paper_table(paper / "ablation_glue.json")
    assert [r["values"]["GLUE avg"] for r in glue["rows"]] == [89.47, 89.78, 89.65, 89.59, 89.91]
    sweep = json.loads((paper / "rank_sweep.json").read_text())
    panels = {(p["model"], p["benchmark"]): p for p in sweep["panels"]}
    assert (
        panels[("LLaMA-2-7B", "GSM8K")]["full_ft"] == 49.13
        and panels[("Mistral-7B", "MATH")]["full_ft"] == 18.64
    )
    assert panels[("LLaMA-2-7B", "GSM8K")]["series"]["BA-LoRA"]["128"] == 54.5
    assert all(v is not None for p in sweep["panels"] for s in p["series"].values() for v in s.values())
    iclr = R.load_paper_table(paper / "nlg_table_iclr2026.json")
    ba = next(r for r in iclr["rows"] if r["method"] == "BA-LoRA")["values"]
    assert ba["GSM8K"] == 55.86 and ba["MBPP"] == 36.86
    for row in iclr["rows"]:  # the printed Avg is the mean of the five columns
        values = row["values"]
        assert statistics.fmean(values[c] for c in iclr["columns"] if c != "Avg") == pytest.approx(
            values["Avg"], abs=0.015
        )


def test_tables_compare_with_the_version_of_their_recipe(repo_root):
    for name in ("nlg", "nlu", "ablation", "ablation_glue"):
        spec = R.TABLES[name]()
        paper = R.load_paper_table(repo_root / "results" / "paper" / spec.paper_file)
        assert spec.preset == "iclr2026"
        # Main tables: the ICLR-2026 version, the recipe the configs run. The ablation was only published
        # for the v1-v5 recipe: it stays compared with that, and says so.
        assert paper["preset"] == ("iclr2026" if name in ("nlg", "nlu") else "v5")


def test_footnotes_state_protocol_paper_version_and_recipe_mismatch(tmp_path, repo_root):
    evals = {
        "gsm8k": {
            "score": 50.0,
            "n": 1319,
            "protocol": "balora-gsm8k",
            "protocol_version": "2",
            "settings": {"decoding": {"max_new_tokens": 1024}},
        },
        "math": {"score": 9.0, "n": 5000, "protocol": "balora-math", "protocol_version": "2"},
    }
    write_run(tmp_path, "ablation", "llama2-7b_all", 42, {}, evals=evals)
    write_run(tmp_path, "nlg", "llama2-7b_ba-lora_metamath", 42, {}, evals=evals)
    out = tmp_path / "tables"
    aggregate_results.main(
        ["nlg", "ablation", "--results_dir", str(tmp_path), "--out_dir", str(out), "--paper", "--seeds", "42"]
    )
    nlg = (out / "nlg.md").read_text()
    assert (
        "Evaluation protocol: GSM8K: balora-gsm8k v2, n=1319, max_new_tokens 1024; MATH: balora-math v2"
        in nlg
    )
    assert "Paper numbers: arXiv v6 (ICLR 2026 camera-ready)" in nlg and "another recipe" not in nlg
    assert md_row(nlg, "BA-LoRA")[3:5] == ["55.86", "-5.86"]  # LLaMA-2-7B BA-LoRA GSM8K, ICLR-2026 number
    ablation = (out / "ablation.md").read_text()
    assert "Paper numbers: arXiv v4/v5" in ablation
    assert "another recipe (v5) than our runs (iclr2026)" in ablation
    # The v3-v5 NLG table on request, flagged as another recipe.
    aggregate_results.main(
        [
            "nlg",
            "--results_dir",
            str(tmp_path),
            "--out_dir",
            str(out),
            "--paper",
            "--paper_file",
            "nlg_table.json",
            "--seeds",
            "42",
        ]
    )
    nlg_v5 = (out / "nlg.md").read_text()
    assert "arXiv v3-v5" in nlg_v5 and "another recipe (v5)" in nlg_v5
    assert md_row(nlg_v5, "BA-LoRA")[3:5] == ["54.53", "-4.53"]
    # Without --paper the table still names the file it would be compared with.
    aggregate_results.main(["nlg", "--results_dir", str(tmp_path), "--out_dir", str(out), "--seeds", "42"])
    assert "Paper comparison: results/paper/nlg_table_iclr2026.json" in (out / "nlg.md").read_text()


def test_tables_scored_under_the_lenient_v1_protocol_say_so(tmp_path):
    write_run(
        tmp_path,
        "mini/nlg",
        "smollm2_lora",
        42,
        {"train_loss": 1.0},
        evals={"gsm8k": {"score": 3.125, "n": 64, "protocol": "balora-gsm8k", "protocol_version": "1"}},
    )
    md = R.to_markdown(R.build_table(R.TABLES["mini_nlg"](), tmp_path))
    assert "GSM8K: balora-gsm8k v1 (a lenient extraction, not the paper's protocol), n=64" in md
    assert "Not compared with a paper table" in md
