"""The studies of the paper's further experiments: grid checks, probe options, their training paths on
tiny models."""

import json
from pathlib import Path

from test_glue_run import TINY as GLUE_TINY
from test_glue_run import _tiny_glue

import finetune_glue
import train_nlg
from balora.repro import run as R

REPO = Path(__file__).resolve().parent.parent


def dry_run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = R.main([*args, "--dry-run", "--results_dir", "/nonexistent/results"])
    out = capsys.readouterr()
    return status, out.out, out.err


def todo(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith("[todo]")]


def test_tsne_steps_refuses_a_step_without_a_dump(capsys):
    status, out, err = dry_run(capsys, "tsne_steps", "--grid", "steps=3000 final")
    assert status == 2 and out == ""
    assert (
        err
        == "error: tsne_steps: step 3000 is not a multiple of dump_steps=2000: no features are dumped there\n"
    )


def test_lora_plus_reg_trains_lora_init_with_the_regularisers(tmp_path):
    # What lora_reg.sh runs: the LoRA config with the regulariser preset switched on.
    metrics = train_nlg.main(
        [
            "--config",
            str(REPO / "configs" / "tiny" / "nlg.yaml"),
            "--output_dir",
            str(tmp_path / "o"),
            "--method",
            "lora",
            "--regularizer_preset",
            "iclr2026",
            "--max_steps",
            "2",
            "--logging_steps",
            "1",
        ]
    )
    assert metrics["adapter_method"] == "lora" and metrics["trained"] == "lora+reg"
    history = json.loads((tmp_path / "o" / "log_history.json").read_text())
    assert any("consistency_loss" in e for e in history)


def test_entropy_diversity_on_glue_and_the_probe_models(tmp_path):
    # nlu_diversity.sh's override, and noisy_probe.sh's architectures (RoBERTa, T5) with PiSSA + reg.
    glue_dir = _tiny_glue(tmp_path / "glue")
    for model, flags in (
        ("tiny-bert", ["--diversity_type", "entropy"]),
        ("tiny-roberta", []),
        ("tiny-t5", []),
    ):
        out = tmp_path / model
        finetune_glue.main(
            [
                "--task_name",
                "rte",
                "--glue_dir",
                str(glue_dir),
                "--model_name_or_path",
                model,
                "--method",
                "ba-lora",
                "--regularizer_preset",
                "iclr2026",
                "--output_dir",
                str(out),
                *flags,
                *GLUE_TINY,
            ]
        )
        config = (out / "config.yaml").read_text()
        assert ("diversity_type: entropy" in config) == bool(flags)
        assert json.loads((out / "metrics.json").read_text())["trainable_params"] > 0


def test_mini_probes_dry_run_plans_every_probe_at_three_seeds(capsys):
    status, out, _ = dry_run(
        capsys,
        "mini_probes",
        "--grid",
        "probes=imbalance noise lambda lora_reg",
    )
    assert status == 0
    runs = todo(out)
    # per seed: 3 methods × (3 ratios + 2 noise levels) + 3 λ scales + LoRA + Reg on SmolLM2 and 4 GLUE tasks
    # (not STS-B, where the NLU terms are constant and LoRA + Reg is LoRA)
    assert len(runs) == len(set(runs)) == 3 * (3 * 5 + 3 + 1 + 4)
    assert not any("stsb" in run for run in runs)
    for run_id in (
        "mini/imbalance/sst2_ba-lora_positive1to49/seed2024",
        "mini/label_noise/sst2_lora_noise40/seed42",
        "mini/lambda_scale/smollm2_ba-lora_lambda_x100/seed1024",
        "mini/lora_reg/rte_lora-reg/seed42",
    ):
        assert run_id in runs
    assert "--minority_class positive --imbalance_ratio 49" in out and "--label_noise 0.4" in out
    assert (
        "--lambda_consistency 2.5 --lambda_diversity 0.5 --lambda_svd 0.5" in out
    )  # × 100 of 0.025/0.005/0.005
    assert "configs/glue/cola_minilm_lora.yaml" in out and "--regularizer_preset iclr2026" in out


def test_mini_probes_nll_only_and_the_lora_reg_split(capsys):
    """nlg_benches=gsm8k_nll drops the generation stage of the SmolLM2 probes only; the SmolLM2 LoRA + Reg
    run is the gsm8k entry of lora_reg_tasks, so NLU and NLG probes can run apart."""
    status, out, _ = dry_run(
        capsys, "mini_probes", "--seeds", "42", "--grid", "probes=lambda lora_reg", "--grid", "lora_reg_tasks=gsm8k",
        "--grid", "nlg_benches=gsm8k_nll",
    )  # fmt: skip
    assert status == 0
    assert todo(out) == [
        "mini/lambda_scale/smollm2_ba-lora_lambda_x0.1/seed42",
        "mini/lambda_scale/smollm2_ba-lora_lambda_x10/seed42",
        "mini/lambda_scale/smollm2_ba-lora_lambda_x100/seed42",
        "mini/lora_reg/smollm2_lora-reg/seed42",
    ]
    assert "eval_gsm8k_nll:" in out and "eval_gsm8k:" not in out
    status, out, _ = dry_run(
        capsys,
        "mini_probes",
        "--seeds",
        "42",
        "--grid",
        "probes=lora_reg",
        "--grid",
        "lora_reg_tasks=sst2 rte",
    )
    assert status == 0
    assert todo(out) == ["mini/lora_reg/sst2_lora-reg/seed42", "mini/lora_reg/rte_lora-reg/seed42"]
