"""finetune_bert_l_sst2.py: its defaults are the author's BERT-large SST-2 script; the paper recipe is a flag."""

import pytest

from balora.cli import finetune_bert_l_sst2, finetune_glue
from balora.repro.config import parse_args
from balora.trainer import BALoRATrainingArguments


def _parsed(argv):
    return parse_args(
        (finetune_glue.GlueArguments, finetune_glue.GlueAdapterArguments, BALoRATrainingArguments),
        ["--regularizer_task", "nlu", *finetune_bert_l_sst2.preset_argv(argv)],
    )


def test_defaults_are_the_authors_script():
    glue_args, method_args, args = _parsed([])
    assert glue_args.task_name == "sst2" and glue_args.model_name_or_path == "google-bert/bert-large-uncased"
    assert glue_args.max_seq_length == 128
    # Standard LoRA init with the regularisers, r 16 / α 32 on query and value, dropout 0.1.
    assert method_args.method == "lora"
    assert (method_args.lora_r, method_args.lora_alpha, method_args.lora_dropout) == (16, 32.0, 0.1)
    assert method_args.target_modules == ["query", "value"]
    assert args.learning_rate == pytest.approx(5e-5) and args.num_train_epochs == 1
    assert args.per_device_train_batch_size == 32 and args.weight_decay == pytest.approx(0.01)
    # The v5-era script's regularisers are on: the run trains as "lora+reg".
    assert args.consistency_type == "mse_normalized" and args.diversity_type == "covariance"
    assert (args.lambda_consistency, args.lambda_diversity, args.lambda_svd) == pytest.approx(
        (0.1, 0.01, 0.01)
    )
    assert args.output_dir.endswith("bert_l_sst2_author")
    # Per-term losses go to TensorBoard, as for every paper-scale run.
    assert args.report_to == ["tensorboard"]


def test_paper_recipe_is_a_flag():
    _, method_args, args = _parsed(["--recipe=paper"])
    assert method_args.method == "ba-lora" and (method_args.lora_r, method_args.lora_alpha) == (8, 16.0)
    assert method_args.lora_dropout == 0.0 and method_args.target_modules is None  # all linear layers
    assert (
        args.learning_rate == pytest.approx(2e-4) and args.num_train_epochs == 3 and args.weight_decay == 0.0
    )
    assert args.output_dir.endswith("bert_l_sst2_paper")


def test_user_flags_override_the_recipe_and_bad_recipes_fail():
    _, method_args, args = _parsed(["--num_train_epochs", "3", "--target_modules", "query", "key", "value"])
    assert args.num_train_epochs == 3 and method_args.target_modules == ["query", "key", "value"]
    with pytest.raises(ValueError, match="--recipe must be one of author, paper"):
        finetune_bert_l_sst2.preset_argv(["--recipe", "v5"])


def test_a_bad_recipe_on_the_command_line_is_one_line_and_exit_status_2(capsys, tmp_path):
    assert finetune_bert_l_sst2.cli(["--recipe", "v5", "--output_dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == "error: --recipe must be one of author, paper; got 'v5'\n"
    assert not (tmp_path / "o").exists()
