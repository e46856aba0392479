"""Teacher-forced NLL of GSM8K reference solutions (protocol "balora-gsm8k-nll" v1).

A low-noise companion to GSM8K accuracy for small models and short runs, where a 64-question
accuracy moves by whole questions (1.6 points each): the mean negative log-likelihood, in nats per
token, of the reference solution given the training prompt. The text is built exactly as in
training (balora.repro.data.tokenize_example): the Alpaca prompt of balora.repro.prompts, the solution with its
"#### N" ending rewritten to MetaMathQA's "The answer is: N", then EOS; only the solution tokens
and EOS count. The headline `score` is the token-weighted mean over all problems (lower is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from balora.repro.data import IGNORE_INDEX, CausalLMCollator, gsm8k_answer_to_metamath, tokenize_example

PROTOCOL = "balora-gsm8k-nll"
PROTOCOL_VERSION = "1"


def reference_examples(rows: Sequence[dict], tokenizer, max_length: int) -> list[dict]:
    """Tokenise GSM8K rows {question, answer} as training does: [{input_ids, labels, truncated}].

    Raises:
        ValueError: a row lacks 'question'/'answer', its answer has no "#### N" ending, or the prompt
            alone fills max_length (no solution token would be scored).
    """
    examples = []
    for index, row in enumerate(rows):
        if "question" not in row or "answer" not in row:
            raise ValueError(
                f"row {index}: GSM8K rows need 'question' and 'answer' fields, got {sorted(row)}"
            )
        response = gsm8k_answer_to_metamath(row["answer"])
        untruncated = tokenize_example(tokenizer, row["question"], response, max_length=10**9)
        example = tokenize_example(tokenizer, row["question"], response, max_length)
        if example is None or untruncated is None:
            raise ValueError(
                f"row {index}: the prompt fills max_length={max_length}; no solution token is left to "
                "score (raise --max_length)"
            )
        example["truncated"] = len(untruncated["input_ids"]) > len(example["input_ids"])
        examples.append(example)
    return examples


@torch.no_grad()
def response_nll(
    model,
    examples: Sequence[dict],
    pad_token_id: int,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, int]]:
    """Summed NLL (nats) and number of scored tokens of each example, in order.

    Examples are right-padded into (B, T) batches; padding never changes a result (causal attention,
    padded positions carry IGNORE_INDEX labels). Token t is scored from the logits at t - 1.
    """
    collate = CausalLMCollator(pad_token_id)
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = collate([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in chunk])
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits  # (B, T, V)
        targets = batch["labels"][:, 1:].to(device)  # (B, T-1)
        token_nll = F.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )  # (B, T-1)
        scored = targets != IGNORE_INDEX
        for row_nll, row_mask in zip(token_nll, scored, strict=True):
            out.append((float(row_nll[row_mask].sum()), int(row_mask.sum())))
        if progress is not None:
            progress(len(chunk))
    return out


def summarize(per_example: Sequence[tuple[float, int]]) -> dict:
    """Token-weighted mean NLL (the score), its perplexity, and the per-problem mean and std."""
    total_nll = sum(nll for nll, _ in per_example)
    total_tokens = sum(n for _, n in per_example)
    per_problem = [nll / n for nll, n in per_example]
    mean = sum(per_problem) / len(per_problem)
    std = math.sqrt(sum((x - mean) ** 2 for x in per_problem) / max(1, len(per_problem) - 1))
    return {
        "nll_per_token": total_nll / total_tokens,
        "perplexity": math.exp(total_nll / total_tokens),
        "tokens": total_tokens,
        "nll_per_problem_mean": mean,
        "nll_per_problem_std": std,
    }
