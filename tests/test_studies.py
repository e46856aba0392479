"""The study registry: every study plans the runs the bash scripts planned, each on an existing config."""

import re
from pathlib import Path

import pytest
import yaml

from balora.repro import run as R
from balora.repro import studies as S

REPO = Path(__file__).resolve().parent.parent
PLANS = REPO / "tests" / "fixtures" / "plans"  # the dry runs of the bash scripts before the registry

# Intended changes against those plans. (1) A training that an earlier study of the registry has (same
# config, flags, seed) is trained once, in that study's outputs folder: the number of such runs per
# study. (2) tsne_steps' rehearsal dumps features at every step and draws step 1 (a 2-step run has no
# step 2000). Every other stage command is the same, character for character.
SHARED = {
    "model_range": 54,  # the NLG table's LoRA / PiSSA / BA-LoRA metamath and python runs of its 3 models
    "model_range.rehearse": 18,
    "rank_sweep": 6,  # Full FT = the NLG table's metamath Full FT runs
    "rank_sweep.rehearse": 2,
    "ablation": 3 + 8 * 3,  # "all" = the NLG table's BA-LoRA run, and the NLU table's BA-LoRA runs
    "ablation.rehearse": 1 + 8,
    "ablation_llms": 9,
    "ablation_llms.rehearse": 3,
    "glue_large_models": 12,  # the MNLI runs = tsne's
    "glue_large_models.rehearse": 4,
}
# Intended changes against the bash scripts' plans: the rehearsal's dump steps fit a 2-step run; its
# --max_new_tokens goes to generating evaluators only (eval/gsm8k_nll.py generates nothing and refused it).
NLL_REHEARSE = (
    "--limit 64 --limit 2 --max_new_tokens 8 --batch_size 2",
    "--limit 64 --limit 2 --batch_size 2",
)
REWRITES = {
    "tsne_steps.rehearse": [("--feature_dump_steps 2000", "--feature_dump_steps 1")],
    "mini.rehearse": [NLL_REHEARSE],
    "mini_probes.rehearse": [NLL_REHEARSE],
}


def _blocks(text: str) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    order, stages, shared = [], {}, {}
    current = None
    for line in text.splitlines():
        if line.startswith("[todo] "):
            current = line.split()[1]
            order.append(current)
            stages[current] = []
        elif current and line.startswith("    (training shared with "):
            shared[current] = line.split()[-1].rstrip(")")
        elif current and line.startswith("    "):
            stages[current].append(line.rstrip())
        else:
            current = None
    return order, stages, shared


def _dry_run(capsys, monkeypatch, *args: str) -> str:
    monkeypatch.setenv("PY", "python")
    monkeypatch.setenv("BALORA_DATA_DIR", "data")
    for var in ("GLUE_DIR", "EVAL_DATA_DIR", "EVAL_EXTRA", "GPUS", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    capsys.readouterr()
    status = R.main([*args, "--dry-run", "--results_dir", "/PLAN/results", "--outputs_dir", "/PLAN/outputs"])
    out = capsys.readouterr().out
    assert status == 0, out
    return out


FIXTURES = sorted(p.name[: -len(".txt")] for p in PLANS.glob("*.txt"))


@pytest.mark.parametrize("fixture", FIXTURES)
def test_the_plan_of_every_study_is_the_bash_scripts_plan(fixture, capsys, monkeypatch):
    study, _, mode = fixture.partition(".")
    # The scripts' settings are read as the runner's own (GPUS, MASTER_PORT): defaults here.
    got = _dry_run(capsys, monkeypatch, study, *(["--rehearse"] if mode else []))
    expected_order, expected, _ = _blocks((PLANS / f"{fixture}.txt").read_text())
    order, stages, shared = _blocks(got)
    assert order == expected_order  # the same run ids in the same order
    assert len(shared) == SHARED.get(fixture, 0)
    for run_id in order:
        want = expected[run_id]
        owner = shared.get(run_id)
        if owner:  # the training stages (and what the evaluations read) are the owner's
            want = [
                re.sub(
                    rf"/PLAN/outputs/{re.escape(run_id)}/(train|pissa_init)",
                    rf"/PLAN/outputs/{owner}/\1",
                    line,
                )
                for line in want
            ]
        for old, new in REWRITES.get(fixture, []):
            want = [line.replace(old, new) for line in want]
        assert stages[run_id] == want, run_id


def test_the_plan_has_estimates_and_the_tables_at_the_end(capsys, monkeypatch):
    out = _dry_run(capsys, monkeypatch, "mini")
    summary = next(line for line in out.splitlines() if line.startswith("# plan:"))
    # The bash planner's estimate, to the second (the grid is sized for ~8 h on 2 cores).
    assert (
        summary == "# plan: 132 runs, 0 done, 132 to do; estimated time of the runs to do: 28479 s = 7.91 h"
    )
    assert "[todo] mini/nlg/smollm2_lora/seed42  (est. 529 s)" in out
    assert "# then: python aggregate_results.py mini_nlg mini_nlu mini_ablation mini_nll_paired" in out


def test_a_shared_training_is_planned_once_across_studies():
    """model_range's LoRA/PiSSA/BA-LoRA runs of the NLG table's models train in the NLG table's folders."""
    opts = R.Options(study="model_range")
    planned = R.make_plan(opts)
    shared = {r.run_id: r.shared_with for r in planned if r.shared_with}
    assert len(shared) == 54
    assert shared["model_range/llama2-7b_pissa_python/seed1024"] == "nlg/llama2-7b_pissa_python/seed1024"
    assert not any(r.startswith("model_range/llama3") for r in shared)
    nlg_ids = {r.run_id for r in R.make_plan(R.Options(study="nlg_table"))}
    assert set(shared.values()) <= nlg_ids
    # The evaluations stay the run's own (model_range scores GSM8K only on metamath).
    run = next(r for r in planned if r.run_id == "model_range/llama2-7b_pissa_metamath/seed42")
    assert [s.name for s in run.stages] == ["pissa_init", "train", "eval_gsm8k"]
    assert run.stages[2].output_dir == "outputs/model_range/llama2-7b_pissa_metamath/seed42/eval_gsm8k"


def _rehearsal_runs(study: S.Study, quick: bool):
    return study.runs(settings=S.Settings(rehearse=True), quick=quick)


def test_rehearsal_settings_belong_to_each_study():
    """The quick rehearsal's grids do not leak into one another (rehearse.sh exported TASKS, SUBSETS)."""
    probe = _rehearsal_runs(S.STUDIES["noisy_probe"], quick=True)
    assert {r.name.split("_")[0] for r in probe} == {"rte", "stsb"}  # no MNLI: it has no probe config
    model_range = _rehearsal_runs(S.STUDIES["model_range"], quick=True)
    assert len(model_range) == 3 * 2 and not any("conversation" in r.name for r in model_range)
    nlu = _rehearsal_runs(S.STUDIES["nlu_table"], quick=True)
    assert {r.name.split("_")[0] for r in nlu} == {"rte", "stsb", "mnli"}
    steps = _rehearsal_runs(S.STUDIES["tsne_steps"], quick=False)
    assert all(r.flags == ("--feature_dump_steps", "1") for r in steps)
    finish = S.study_finish(S.STUDIES["tsne_steps"], rehearse=True, quick=False)
    assert [cmd[cmd.index("--step") + 1] for cmd in finish] == ["1", "final"]
    # Without --rehearse the paper's grid: nothing of the rehearsal stays behind.
    assert len(S.STUDIES["model_range"].runs()) == 144
    assert all(r.flags == ("--feature_dump_steps", "2000") for r in S.STUDIES["tsne_steps"].runs())


def _every_plan():
    for study in S.STUDIES.values():
        yield from study.runs()
        yield from _rehearsal_runs(study, quick=False)
        yield from _rehearsal_runs(study, quick=True)


def test_every_run_of_every_study_resolves_to_a_config_and_a_data_schema(tmp_path):
    """Each run's config exists and parses with its training flags in the entry point's argument classes,
    and its data is a dataset the loaders know (a hub id with a rehearsal stand-in, a GLUE task, a local
    or embedded file): a missing config or a flag the script does not take is caught here, not by a user."""
    import finetune_glue
    import train_nlg
    from balora.repro import glue, models, rehearsal
    from balora.repro.config import parse_args

    seen = set()
    for spec in _every_plan():
        key = (spec.config, spec.flags, spec.kind)
        if key in seen:
            continue
        seen.add(key)
        path = REPO / spec.config
        assert path.is_file(), f"{spec.run_id}: {spec.config} missing"
        config = yaml.safe_load(path.read_text())
        common = ["--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false", "--deepspeed", ""]
        if spec.kind == "glue":
            parse_args(
                finetune_glue.ARGUMENT_CLASSES,
                ["--regularizer_task", "nlu", "--config", str(path), *spec.flags, *common],
            )
            glue.get_task(config["task_name"])
            model = config["model_name_or_path"]
            assert model in rehearsal.MODEL_STANDINS or model in (models.MINILM, models.SMOLLM2), model
        else:
            parse_args(train_nlg.ARGUMENT_CLASSES, ["--config", str(path), *spec.flags, *common])
            data = config["data_path"]
            if data in rehearsal.DATASET_STANDINS:
                folder = rehearsal.FIXTURE_DIR / rehearsal.DATASET_STANDINS[data]
                assert (folder / config.get("data_subset", "default")).is_dir(), (
                    f"{spec.run_id}: {data} {config}"
                )
            else:
                assert data.startswith(("data/", "embedded:")), f"{spec.run_id}: data_path {data}"
            assert spec.model in S.MODEL_ID
            for bench in spec.benches:
                assert (REPO / "eval" / f"{bench}.py").is_file()
    assert len(seen) > 300


def test_a_variant_config_of_a_pissa_method_gets_its_pissa_init_stage():
    """The *_ba-lora-constant configs train BA-LoRA (their `method`): PiSSA init first, the adapter evaluated."""
    opts = R.Options(
        study="nlg_table", seeds=(42,), grid={"methods": ("ba-lora-constant",), "subsets": ("python",)}
    )
    run = R.make_plan(opts)[0]
    assert [s.name for s in run.stages] == ["pissa_init", "train", "eval_humaneval", "eval_mbpp"]
    assert "--adapter" in run.stages[2].argv


def test_committed_configs_are_generated_and_each_belongs_to_a_study():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "balora.repro.studies", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert S.check_configs(S.GRID_VARIANTS) == []
    # Without the --grid variants the RoBERTa-large configs are reported as planned by no study.
    problems = S.check_configs()
    assert "configs/glue/rte_roberta-large_lora.yaml: in configs/, planned by no study" in "\n".join(problems)
    # Every config is generated, except the few listed as hand-written.
    generated = S.generated_configs()
    committed = {f"configs/{p.relative_to(REPO / 'configs')}" for p in (REPO / "configs").rglob("*.yaml")}
    assert committed == set(generated) | set(S.HAND_WRITTEN_CONFIGS)
    assert len([c for c in generated if c.startswith("configs/nlg/")]) == 75
    assert not set(generated) & set(S.HAND_WRITTEN_CONFIGS)
    assert set(S.GENERATED_FOR_NO_STUDY) <= set(generated)  # the quick start's: generated, run by no study


def test_a_hand_edited_config_is_caught_and_write_configs_restores_it(tmp_path):
    """A generated config edited by hand (an NLG λ schedule, a mini lr), one deleted and a copy dropped into
    configs/: --check names each, says how to regenerate and changes nothing; --write-configs restores the
    generated files byte for byte and leaves the copy to the user."""
    import shutil
    import subprocess
    import sys

    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    nlg = configs / "nlg" / "mistral-7b_python_ba-lora.yaml"
    nlg.write_text(nlg.read_text().replace("lambda_schedule: iclr2026", "lambda_schedule: constant"))
    mini = configs / "mini" / "smollm2_gsm8k_lora.yaml"
    mini.write_text(mini.read_text().replace("learning_rate: 2.0e-4", "learning_rate: 1.0e-4"))
    (configs / "nlg" / "llama3-8b_metamath_pissa.yaml").unlink()
    copy = configs / "nlg" / "my_llama2-7b_metamath_ba-lora.yaml"
    shutil.copy(configs / "nlg" / "llama2-7b_metamath_ba-lora.yaml", copy)
    before = {p: p.read_bytes() for p in configs.rglob("*.yaml")}

    def studies(*args):
        cmd = [sys.executable, "-m", "balora.repro.studies", *args, "--configs_dir", str(configs)]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)

    check = studies("--check")
    assert check.returncode == 1
    out = check.stdout
    assert (
        "configs/nlg/mistral-7b_python_ba-lora.yaml: line 25 is `lambda_schedule: constant`, the generator "
        "writes `lambda_schedule: iclr2026`" in out
    )
    assert "configs/mini/smollm2_gsm8k_lora.yaml: line 26 is `learning_rate: 1.0e-4`" in out
    assert "configs/nlg/llama3-8b_metamath_pissa.yaml: generated, missing from configs/" in out
    assert (
        "configs/nlg/my_llama2-7b_metamath_ba-lora.yaml: neither generated nor in HAND_WRITTEN_CONFIGS" in out
    )
    assert "run: python -m balora.repro.studies --write-configs" in out
    assert {p: p.read_bytes() for p in configs.rglob("*.yaml")} == before

    write = studies("--write-configs")
    assert write.returncode == 1 and "wrote 3 of" in write.stdout  # the copy is still reported
    copy.unlink()
    assert studies("--check").returncode == 0
    for path in (REPO / "configs").rglob("*.yaml"):
        assert (configs / path.relative_to(REPO / "configs")).read_bytes() == path.read_bytes(), path


def test_config_values_are_written_as_yaml_reads_them_back():
    """YAML 1.1 (PyYAML) reads 2e-05 as a string and `no` as false: the generated configs write what the
    loader turns back into the registry's value."""
    from balora.repro.nlg_configs import yaml_value

    for value in (2e-5, 2e-4, 1.2e-3, 0.03, 0.0, 1e20, 512, True, "no", "train[:100000]", "none", ["q_proj"]):
        assert yaml.safe_load(f"k: {yaml_value(value)}")["k"] == value, value
    assert yaml_value(2e-5) == "2.0e-5"


def test_the_launch_command_in_each_config_header_plans_that_config():
    """A config's header names the study command that runs it (bash scripts/<study>.sh --grid ...)."""
    import shlex

    checked = 0
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        for line in path.read_text().splitlines():
            if not line.startswith("#") or "bash scripts/" not in line:
                continue
            words = shlex.split(line[line.index("bash scripts/") :])
            study = Path(words[1]).stem
            opts = R.options_from_args([study, *words[2:]])
            configs = {run.spec.config for run in R.make_plan(opts)}
            assert str(path.relative_to(REPO)) in configs, line
            checked += 1
    assert checked >= 75


# The scripts' tables and figures at the end, as their dry runs printed them: the same commands now, except
# mini's t-SNE titles (the dry run printed MiniLM-LoRA, the run itself drew "MiniLM LoRA": the run's kept)
# and tsne_steps' rehearsal figures (steps 1 and final).
THEN_CHANGED = {"MiniLM-LoRA MiniLM-BA-LoRA": r"MiniLM\ LoRA MiniLM\ BA-LoRA"}


@pytest.mark.parametrize("fixture", [f for f in FIXTURES if f != "tsne_steps.rehearse"])
def test_the_tables_and_figures_at_the_end_are_the_scripts(fixture, capsys, monkeypatch):
    study, _, mode = fixture.partition(".")
    got = _dry_run(capsys, monkeypatch, study, *(["--rehearse"] if mode else []))
    then = [line for line in got.splitlines() if line.startswith("# then: ")]
    for line in (PLANS / f"{fixture}.txt").read_text().splitlines():
        if line.startswith("# then: "):
            for old, new in THEN_CHANGED.items():
                line = line.replace(old, new)
            assert line in then


def test_every_model_a_committed_config_names_has_a_rehearsal_stand_in():
    """A config of configs/ whose model has no tiny stand-in would stop its study's rehearsal."""
    from balora.repro import models, rehearsal

    missing = set()
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        model = (yaml.safe_load(path.read_text()) or {}).get("model_name_or_path")
        known = model in rehearsal.MODEL_STANDINS or model in (models.MINILM, models.SMOLLM2)
        if isinstance(model, str) and not known and not model.startswith("tiny-"):
            missing.add(f"{model} ({path.relative_to(REPO)})")
    assert not missing, sorted(missing)


def test_a_planned_config_whose_model_has_no_settings_is_refused(monkeypatch, capsys):
    """A study that plans a model the NLG recipes do not know: --check stops with one line naming the config
    and the table to add the model to (exit status 2), not a traceback or a half-written configs/."""
    from balora.repro import nlg_configs

    def grid(a, seeds, s):
        return [S.nlg_run("dropout", "phi3-mini_lora", 42, "phi3-mini", "lora", "metamath")]

    monkeypatch.setitem(S.STUDIES, "dropout", S.Study("dropout", "a study with a new model", grid))
    nlg_configs.planned.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_info:
            S.main(["--check"])
    finally:
        nlg_configs.planned.cache_clear()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(
        "configs/nlg/phi3-mini_metamath_lora.yaml is planned by a study, but phi3-mini has no settings in "
        "NLG_MODELS (balora/repro/nlg_configs.py): add them, then python -m balora.repro.studies --write-configs"
    )


def test_the_worked_example_of_adding_a_study_plans_and_tabulates(monkeypatch, capsys, tmp_path):
    """results/README.md's worked example, run as written: its grid function and Study entry registered, its
    table added to results.TABLES; the dry-run plans its six runs on committed configs, and its table is
    built (every cell missing, each named) from an empty results folder."""
    from balora.repro import results

    section = (REPO / "results" / "README.md").read_text().split("## Adding a study")[1].split("\n## ")[0]
    grid_code, table_code = re.findall(r"```python\n(.*?)```", section, re.S)
    grid_code, study_entry = grid_code.split("# in _study_list():")
    namespace = vars(S).copy()
    exec(grid_code, namespace)
    study = eval(study_entry.strip().rstrip(","), namespace)
    monkeypatch.setitem(S.STUDIES, "dropout", study)
    table_ns = vars(results).copy() | {"GRID": {"dropout": study.axes}}
    monkeypatch.setattr(results, "TABLES", {})
    exec("def _example():\n" + table_code.split("\n", 1)[1], table_ns)
    table_ns["_example"]()

    assert R.main(["dropout", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert (
        "# plan: 6 runs" in plan
        and "--lora_dropout 0.1" in plan
        and "configs/nlg/llama2-7b_metamath_ba-lora" in plan
    )
    table = results.build_table(results.TABLES["dropout"](), tmp_path)
    text = results.to_markdown(table)
    assert "p = 0.05" in text and "LLaMA-2-7B" in text and "missing (run llama2-7b_ba-lora_p0.1)" in text
