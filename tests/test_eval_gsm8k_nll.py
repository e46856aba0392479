"""Teacher-forced NLL of GSM8K solutions: exact against the model's own loss, padding-free, the CLI."""

import json
import math

import pytest
import torch
from helpers import EVAL_FIXTURES

from balora.cli import eval_gsm8k_nll
from balora.eval import answer_nll
from balora.eval.generation import load_model
from balora.repro.data import gsm8k_answer_to_metamath
from balora.repro.prompts import format_prompt

ROWS = [json.loads(line) for line in (EVAL_FIXTURES / "gsm8k_tiny.jsonl").read_text().splitlines()]


def test_batched_nll_equals_the_models_own_loss_one_problem_at_a_time():
    model, tokenizer = load_model("tiny-llama")
    examples = answer_nll.reference_examples(ROWS, tokenizer, max_length=512)
    # Different lengths, so the batch of 3 is padded: padding must not change any result.
    assert len({len(e["input_ids"]) for e in examples}) == 3
    batched = answer_nll.response_nll(model, examples, tokenizer.pad_token_id, batch_size=3)
    for row, example, (nll, count) in zip(ROWS, examples, batched, strict=True):
        prompt_ids = tokenizer(format_prompt(row["question"]))["input_ids"]
        response = gsm8k_answer_to_metamath(row["answer"])
        full_ids = tokenizer(format_prompt(row["question"]) + response)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        assert count == len(full_ids) - len(prompt_ids)  # the solution and EOS, never the prompt
        ids = torch.tensor([example["input_ids"]])
        with torch.no_grad():
            mean_loss = model(input_ids=ids, labels=torch.tensor([example["labels"]])).loss
        assert nll == pytest.approx(float(mean_loss) * count, rel=1e-5)


def test_summary_weights_tokens_and_reports_the_spread():
    summary = answer_nll.summarize([(2.0, 1), (6.0, 3)])
    assert summary["nll_per_token"] == pytest.approx(8.0 / 4)
    assert summary["perplexity"] == pytest.approx(math.exp(2.0))
    assert summary["nll_per_problem_mean"] == pytest.approx(2.0) and summary["nll_per_problem_std"] == 0.0
    assert answer_nll.summarize([(1.0, 1), (3.0, 1)])["nll_per_problem_std"] == pytest.approx(math.sqrt(2.0))


def test_rows_that_cannot_be_scored_are_errors_that_name_the_row():
    _, tokenizer = load_model("tiny-llama")
    with pytest.raises(ValueError, match="row 1: .*'question' and 'answer'"):
        answer_nll.reference_examples([ROWS[0], {"question": "q"}], tokenizer, 512)
    with pytest.raises(ValueError, match="no '####'"):
        answer_nll.reference_examples([{"question": "q", "answer": "7"}], tokenizer, 512)
    with pytest.raises(ValueError, match="row 0: the prompt fills max_length=8"):
        answer_nll.reference_examples(ROWS[:1], tokenizer, 8)


def test_truncation_is_counted_not_hidden():
    _, tokenizer = load_model("tiny-llama")
    prompt_len = len(tokenizer(format_prompt(ROWS[0]["question"]))["input_ids"])
    short = answer_nll.reference_examples(ROWS[:1], tokenizer, prompt_len + 2)[0]
    assert short["truncated"] and sum(label != -100 for label in short["labels"]) == 2
    assert not answer_nll.reference_examples(ROWS[:1], tokenizer, 512)[0]["truncated"]


def test_cli_writes_samples_and_a_token_weighted_score(tmp_path):
    metrics = eval_gsm8k_nll.main(
        [
            "--model",
            "tiny-llama",
            "--data",
            str(EVAL_FIXTURES / "gsm8k_tiny.jsonl"),
            "--batch_size",
            "2",
            "--output_dir",
            str(tmp_path),
        ]
    )
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [0, 1, 2] and metrics["n"] == 3
    expected = sum(r["nll"] for r in rows) / sum(r["tokens"] for r in rows)
    assert metrics["score"] == pytest.approx(expected, abs=1e-6)
    assert metrics["protocol"] == "balora-gsm8k-nll" and metrics["truncated"] == 0
    assert metrics["settings"]["data"]["file_sha256"]
    # A random-init model over a 512-token vocabulary is near uniform: about log(512) nats per token.
    assert 0.8 * math.log(512) < metrics["score"] < 1.2 * math.log(512)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["score"] == metrics["score"]


@pytest.mark.slow
def test_smollm2_finds_true_solutions_likelier_than_solutions_of_other_problems(shared_data):
    """A real model conditions on the question: each solution is likelier under its own question."""
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:4]]
    model, tokenizer = load_model("smollm2-135m-instruct")
    swapped = [
        {"question": rows[(i + 1) % 4]["question"], "answer": row["answer"]} for i, row in enumerate(rows)
    ]
    true_nll = answer_nll.response_nll(
        model, answer_nll.reference_examples(rows, tokenizer, 512), tokenizer.pad_token_id
    )
    swap_nll = answer_nll.response_nll(
        model, answer_nll.reference_examples(swapped, tokenizer, 512), tokenizer.pad_token_id
    )
    for (true, n_true), (other, n_other) in zip(true_nll, swap_nll, strict=True):
        assert n_true == n_other  # the same solution tokens were scored
        assert true < other
    per_token = sum(t for t, _ in true_nll) / sum(n for _, n in true_nll)
    assert 0.2 < per_token < 3.0  # a trained instruct model, not a uniform one (log 49152 = 10.8)
