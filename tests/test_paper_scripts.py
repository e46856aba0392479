"""The scripts of the paper's further experiments: dry-run plans, and their training paths on tiny models."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_glue_run import TINY as GLUE_TINY
from test_glue_run import _tiny_glue

import finetune_glue
import train_nlg

REPO = Path(__file__).resolve().parent.parent

# script -> (runs in the default plan, run ids that must be in it, text every plan must contain)
PLANS = {
    "ablation_llms.sh": (
        3 * 5 * 3,
        [
            "ablation/mistral-7b_noreg/seed42",
            "ablation/gemma-7b_all/seed2024",
            "ablation/llama2-7b_svd/seed1024",
        ],
        "--lambda_consistency 0 --lambda_diversity 0",
    ),
    "lora_reg.sh": (
        3 * 3,
        ["lora_reg/llama2-7b_lora-reg_metamath/seed42", "lora_reg/gemma-7b_lora-reg_metamath/seed2024"],
        "configs/nlg/mistral-7b_metamath_lora.yaml",
    ),
    "lambda_sensitivity.sh": (
        3 * 4 * 3,
        [
            "lambda_sensitivity/llama2-7b_consistency_x0.25/seed42",
            "lambda_sensitivity/llama2-7b_svd_x4/seed2024",
        ],
        "--lambda_consistency 0.00625",
    ),
    "glue_large_models.sh": (
        2 * 8 * 2 * 3,
        ["glue_large/stsb_gpt2-xl_ba-lora/seed42", "glue_large/qqp_bert-large_lora/seed1024"],
        "configs/glue/rte_gpt2-xl_lora.yaml",
    ),
    "nlu_diversity.sh": (
        3 + 2 * 3,
        [
            "nlu_diversity/mnli_deberta-v3-base_ba-lora-entropy/seed42",
            "nlu/mnli_deberta-v3-base_lora/seed2024",
        ],
        "--diversity_type entropy",
    ),
    "noisy_probe.sh": (
        2 * 4 * 2 * 3,
        ["noisy_probe/cola_roberta-base_pissa/seed42", "noisy_probe/mrpc_t5-base_ba-lora/seed2024"],
        "configs/glue/stsb_t5-base_ba-lora.yaml",
    ),
    "imbalanced_mnli.sh": (
        3 * 3,
        [
            "imbalanced_mnli/mnli_deberta-v3-base_ba-lora_contradiction1to19/seed42",
            "imbalanced_mnli/mnli_deberta-v3-base_lora_contradiction1to19/seed2024",
        ],
        "--minority_class contradiction --imbalance_ratio 19",
    ),
    "tsne_steps.sh": (
        2 * 2,
        ["tsne_steps/bert-large_lora/seed42", "tsne_steps/gpt2-xl_ba-lora/seed42"],
        "--feature_dump_steps 2000",
    ),
}


def run_script(name, *args, env=None):
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("SEEDS", "MODELS", "METHODS", "GPUS", "TASKS")
    }
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


@pytest.mark.parametrize("script", sorted(PLANS))
def test_dry_run_plans_existing_configs(script, tmp_path):
    proc = run_script(
        script, "--dry-run", "--results_dir", str(tmp_path / "r"), "--outputs_dir", str(tmp_path / "o")
    )
    assert proc.returncode == 0, proc.stderr
    count, must_have, text = PLANS[script]
    todo = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("[todo]")]
    assert len(todo) == count == len(set(todo)), proc.stdout[-2000:]
    assert all(run_id in todo for run_id in must_have)
    assert "!! missing file" not in proc.stdout  # every config the plan names exists
    assert text in proc.stdout
    assert proc.stdout.count("    train:") == count
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()


def test_tsne_steps_refuses_a_step_without_a_dump(tmp_path):
    proc = run_script(
        "tsne_steps.sh", "--dry-run", "--results_dir", str(tmp_path / "r"), env={"STEPS": "3000"}
    )
    assert proc.returncode == 2 and "not a multiple of DUMP_STEPS" in proc.stderr


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


def test_mini_probes_dry_run_plans_every_probe_at_three_seeds(tmp_path):
    proc = run_script(
        "mini_probes.sh",
        "--dry-run",
        "--results_dir",
        str(tmp_path / "r"),
        "--outputs_dir",
        str(tmp_path / "o"),
        env={"PROBES": "imbalance noise lambda lora_reg"},
    )
    assert proc.returncode == 0, proc.stderr
    todo = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("[todo]")]
    # per seed: 3 methods × (3 ratios + 2 noise levels) + 3 λ scales + LoRA + Reg on SmolLM2 and 4 GLUE tasks
    # (not STS-B, where the NLU terms are constant and LoRA + Reg is LoRA)
    assert len(todo) == len(set(todo)) == 3 * (3 * 5 + 3 + 1 + 4)
    assert not any("stsb" in run for run in todo)
    for run_id in (
        "mini/imbalance/sst2_ba-lora_positive1to49/seed2024",
        "mini/label_noise/sst2_lora_noise40/seed42",
        "mini/lambda_scale/smollm2_ba-lora_lambda_x100/seed1024",
        "mini/lora_reg/rte_lora-reg/seed42",
    ):
        assert run_id in todo
    out = proc.stdout
    assert "--minority_class positive --imbalance_ratio 49" in out and "--label_noise 0.4" in out
    assert (
        "--lambda_consistency 2.5 --lambda_diversity 0.5 --lambda_svd 0.5" in out
    )  # × 100 of 0.025/0.005/0.005
    assert "configs/glue/cola_minilm_lora.yaml" in out and "--regularizer_preset iclr2026" in out
    assert "!! missing file" not in out and not (tmp_path / "r").exists()


def test_mini_probes_nll_only_and_the_lora_reg_split(tmp_path):
    """PROBE_NLG_BENCHES=gsm8k_nll drops the generation stage of the SmolLM2 probes only; the SmolLM2
    LoRA + Reg run is the gsm8k entry of LORA_REG_TASKS, so NLU and NLG probes can run apart."""
    common = ["--dry-run", "--results_dir", str(tmp_path / "r"), "--outputs_dir", str(tmp_path / "o")]
    nlg = run_script(
        "mini_probes.sh",
        *common,
        env={
            "PROBES": "lambda lora_reg",
            "LORA_REG_TASKS": "gsm8k",
            "PROBE_NLG_BENCHES": "gsm8k_nll",
            "SEEDS": "42",
        },
    )
    assert nlg.returncode == 0, nlg.stderr
    todo = [line.split()[1] for line in nlg.stdout.splitlines() if line.startswith("[todo]")]
    assert todo == [
        "mini/lambda_scale/smollm2_ba-lora_lambda_x0.1/seed42",
        "mini/lambda_scale/smollm2_ba-lora_lambda_x10/seed42",
        "mini/lambda_scale/smollm2_ba-lora_lambda_x100/seed42",
        "mini/lora_reg/smollm2_lora-reg/seed42",
    ]
    assert "eval_gsm8k_nll:" in nlg.stdout and "eval_gsm8k:" not in nlg.stdout
    nlu = run_script(
        "mini_probes.sh", *common, env={"PROBES": "lora_reg", "LORA_REG_TASKS": "sst2 rte", "SEEDS": "42"}
    )
    assert nlu.returncode == 0, nlu.stderr
    todo = [line.split()[1] for line in nlu.stdout.splitlines() if line.startswith("[todo]")]
    assert todo == ["mini/lora_reg/sst2_lora-reg/seed42", "mini/lora_reg/rte_lora-reg/seed42"]
