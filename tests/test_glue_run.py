"""finetune_glue.py / finetune_bert_l_sst2.py end to end, and every configs/glue/*.yaml parses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import launch_distributed

from balora.cli import finetune_bert_l_sst2, finetune_glue
from balora.repro.config import parse_args
from balora.trainer import BALoRATrainingArguments

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs" / "glue").glob("*.yaml"))
TINY = [
    "--max_steps",
    "3",
    "--per_device_train_batch_size",
    "8",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--use_cpu",
    "--logging_steps",
    "1",
    "--feature_batch_size",
    "16",
]


def _tiny_glue(root: Path) -> Path:
    """A 40-row RTE- and STS-B-format GLUE folder (original TSV layout)."""
    words = "a man dog runs the park walks cat sleeps on sofa".split()
    for task, header, label in (
        ("RTE", "index\tsentence1\tsentence2\tlabel", lambda i: ["entailment", "not_entailment"][i % 2]),
        (
            "STS-B",
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
            lambda i: f"{(i % 6) * 0.8:.3f}",
        ),
    ):
        for split in ("train", "dev"):
            lines = [header]
            for i in range(40):
                s1 = " ".join(words[(i + k) % len(words)] for k in range(6))
                s2 = " ".join(words[(2 * i + k) % len(words)] for k in range(4))
                prefix = [str(i)] if task == "RTE" else [str(i), "g", "f", "y", "0", "n", "n"]
                lines.append("\t".join([*prefix, s1, s2, label(i)]))
            (root / task).mkdir(parents=True, exist_ok=True)
            (root / task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_every_config_parses_and_documents_its_launch():
    assert len(CONFIGS) >= 50
    for path in CONFIGS:
        text = path.read_text()
        assert text.startswith("# ") and f"--config configs/glue/{path.name}" in text, path.name
        glue_args, method_args, args = parse_args(
            (finetune_glue.GlueArguments, finetune_glue.GlueAdapterArguments, BALoRATrainingArguments),
            ["--config", str(path), "--output_dir", "/tmp/unused", "--regularizer_task", "nlu"],
        )
        assert yaml.safe_load(text)["method"] == method_args.method
        if method_args.method == "ba-lora":
            assert args.regularizers_enabled and args.lambda_consistency == pytest.approx(0.15)
    names = {p.name for p in CONFIGS}
    for task in ("rte", "mrpc", "sst2", "cola", "stsb"):
        for method in finetune_glue.METHOD_CHOICES:
            assert f"{task}_minilm_{method}.yaml" in names
            assert f"{task}_deberta-v3-base_{method}.yaml" in names


def test_regression_run_writes_all_outputs(tmp_path):
    glue_dir = _tiny_glue(tmp_path / "glue")
    out = tmp_path / "stsb"
    metrics = finetune_glue.main(
        [
            "--task_name",
            "stsb",
            "--glue_dir",
            str(glue_dir),
            "--model_name_or_path",
            "tiny-bert",
            "--method",
            "ba-lora",
            "--regularizer_preset",
            "iclr2026",
            "--output_dir",
            str(out),
            "--feature_dump_steps",
            "2",
            *TINY,
        ]
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["task"] == "stsb" and set(saved["final"]) >= {"pearson", "spearmanr", "score"}
    assert (
        saved["score"] == max(e["score"] for e in saved["epochs"])
        and saved["final_score"] == metrics["final_score"]
    )
    # All three NLU terms are constant on STS-B's (B, 1) output (docs/nlu.md).
    assert saved["constant_regularizer_terms"] == ["consistency", "diversity", "svd"]
    assert saved["trainable_params"] > 0 and "majority_class_score" not in saved
    for name in ("features_step_final", "features_step_3", "features_step_2", "labels_step_final"):
        assert (out / f"{name}.npy").is_file(), name
    feats = np.load(out / "features_step_final.npy")
    assert feats.shape == (40, 32) and np.array_equal(feats, np.load(out / "features_step_3.npy"))
    assert np.load(out / "labels_step_final.npy").dtype.kind == "f"
    assert yaml.safe_load((out / "config.yaml").read_text())["task_name"] == "stsb"
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 42 and "git" in run and run["data_source"] == "tsv"
    assert isinstance(json.loads((out / "log_history.json").read_text()), list)


@pytest.mark.slow
def test_two_cpu_processes_shard_the_data_and_rank_0_alone_writes(tmp_path):
    """Regression: every rank wrote metrics.json/run.json/features through the same temporary names."""
    glue_dir = _tiny_glue(tmp_path / "glue")
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29519",
        "finetune_glue.py",
        "--task_name",
        "rte",
        "--glue_dir",
        str(glue_dir),
        "--model_name_or_path",
        "tiny-bert",
        "--method",
        "ba-lora",
        "--regularizer_preset",
        "iclr2026",
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "1",
        "--eval_strategy",
        "epoch",
        "--per_device_train_batch_size",
        "4",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--use_cpu",
    ]
    proc = launch_distributed(cmd, env, REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # 40 rows, 2 ranks × 4 per step: 5 optimizer steps, not the 10 of a single process.
    assert metrics["global_step"] == 5 and metrics["eval_samples"] == 40
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert np.load(out / "features_step_final.npy").shape[0] == 40
    assert not list(out.glob("*.tmp"))


def test_bad_input_errors(tmp_path, capsys):
    glue_dir = _tiny_glue(tmp_path / "glue")
    base = [
        "--glue_dir",
        str(glue_dir),
        "--model_name_or_path",
        "tiny-bert",
        "--output_dir",
        str(tmp_path / "o"),
        *TINY,
    ]
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst3'"):
        finetune_glue.main([*base, "--task_name", "sst3"])
    with pytest.raises(ValueError, match=r"not reported for stsb \(regression task\)"):
        finetune_glue.main(
            [*base, "--task_name", "stsb", "--method", "lora", "--metric_for_best_model", "accuracy"]
        )
    with pytest.raises(ValueError, match="Linear modules available.*query"):
        finetune_glue.main(
            [*base, "--task_name", "rte", "--method", "lora", "--target_modules", "q_proj", "v_proj"]
        )
    with pytest.raises(ValueError, match="regularizer_preset"):
        finetune_glue.main([*base, "--task_name", "rte", "--method", "ba-lora"])
    # Trainer would take the flag and silently train from scratch; the script refuses it, before any file.
    with pytest.raises(ValueError, match="finetune_glue.py does not resume"):
        finetune_glue.main(
            [*base, "--task_name", "rte", "--method", "lora", "--resume_from_checkpoint", "last"]
        )
    assert not (tmp_path / "o" / "config.yaml").exists()
    # The command exits non-zero with the file and line of a malformed TSV row (its entry point here;
    # `python finetune_glue.py` with a bad TSV in a real process: test_bad_input.py, non-UTF-8 TSV).
    (glue_dir / "RTE" / "train.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tbroken\n"
    )
    capsys.readouterr()
    status = finetune_glue.cli([*base, "--task_name", "rte", "--method", "lora"])
    assert status != 0 and "RTE/train.tsv:3: malformed row" in capsys.readouterr().err


def test_quick_start_preset_with_model_override(tmp_path):
    argv = finetune_bert_l_sst2.preset_argv(
        ["--recipe", "paper", "--model", "tiny-bert", "--learning_rate", "1e-3"]
    )
    glue_args, method_args, args = parse_args(
        (finetune_glue.GlueArguments, finetune_glue.GlueAdapterArguments, BALoRATrainingArguments),
        ["--regularizer_task", "nlu", *argv],
    )
    assert glue_args.task_name == "sst2" and glue_args.model_name_or_path == "tiny-bert"
    assert method_args.method == "ba-lora" and (method_args.lora_r, method_args.lora_alpha) == (8, 16.0)
    assert args.learning_rate == pytest.approx(1e-3) and args.consistency_type == "mse_normalized"
    assert (args.lambda_consistency, args.lambda_diversity, args.lambda_svd) == pytest.approx(
        (0.1, 0.01, 0.01)
    )


def test_real_minilm_mrpc_few_steps(shared_data, tmp_path):
    """The embedded MiniLM on the real MRPC TSVs: a few steps run and the outputs are complete."""
    if not (shared_data / "glue" / "MRPC").is_dir():
        pytest.skip("MRPC TSVs not present")
    out = tmp_path / "mrpc"
    metrics = finetune_glue.main(
        [
            "--config",
            str(REPO / "configs/glue/mrpc_minilm_ba-lora.yaml"),
            "--glue_dir",
            str(shared_data / "glue"),
            "--output_dir",
            str(out),
            "--max_train_samples",
            "32",
            "--max_eval_samples",
            "64",
            "--max_seq_length",
            "64",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "16",
            "--use_cpu",
        ]
    )
    assert metrics["trainable_params"] > 0 and 0.0 <= metrics["score"] <= 100.0
    assert np.load(out / "features_step_final.npy").shape == (64, 384)  # MiniLM hidden size
    assert metrics["majority_class_score"] > 50.0


@pytest.mark.parametrize("tag,runs", [("minilm", 50), ("deberta-v3-base", 80), ("roberta-large", 80)])
def test_glue_sh_dry_run_plans_existing_configs(tag, runs):
    proc = subprocess.run(
        ["bash", "scripts/glue.sh", "--dry-run", "--seeds", "42", "--grid", f"models={tag}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "missing file" not in proc.stdout
    assert f"# plan: {runs} runs" in proc.stdout


def test_feature_pooling_per_architecture():
    import torch
    from datasets import Dataset
    from transformers import DataCollatorWithPadding

    from balora.repro import features, glue

    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)  # (B, T, H)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert torch.equal(features.pool_hidden_states(hidden, mask, "cls"), hidden[:, 0])
    assert torch.equal(
        features.pool_hidden_states(hidden, mask, "last_token"), torch.stack([hidden[0, 2], hidden[1, 1]])
    )
    assert torch.allclose(features.pool_hidden_states(hidden, mask, "encoder_mean")[1], hidden[1, :2].mean(0))
    for kind, pooling in (("tiny-bert", "cls"), ("tiny-gpt2", "last_token"), ("tiny-t5", "encoder_mean")):
        model, tokenizer = glue.load_classifier(kind, "rte")
        assert features.pooling_for(model.config) == pooling
        raw = Dataset.from_dict(
            {"sentence1": ["a b c", "d e f g h", "i"], "sentence2": ["x", "y z", "w v"], "label": [0, 1, 0]}
        )
        ds = glue.tokenize_dataset(raw, tokenizer, 16).select_columns(
            [*glue.model_input_columns(model.config), "labels"]
        )
        feats, labels = features.extract_features(model, ds, DataCollatorWithPadding(tokenizer), batch_size=2)
        assert feats.shape == (3, 32) and feats.dtype == np.float32 and labels.tolist() == [0, 1, 0]
