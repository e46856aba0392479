"""BA-LoRA in your own training loop: PiSSA adapter, frozen reference, the three terms, one optimizer.

    python examples/custom_loop.py                                   # tiny random LLaMA, CPU, seconds
    python examples/custom_loop.py --model smollm2-135m-instruct --steps 20
    python examples/custom_loop.py --model meta-llama/Llama-2-7b-hf --steps 100 --device cuda

The whole method in ~30 lines of `train`: `prepare_model` adds the PiSSA adapter and keeps the initial
factors as a frozen second adapter, so `reference_mode(model)` computes the pre-trained function
without a second copy of the model; `regularizer_terms` gives the unweighted terms on the response
tokens (docs/method.md §3), weighted here by the ICLR-2026 preset's λs.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from balora import adapters
from balora.regularizers import preset, regularizer_terms
from balora.repro import data, models


def load(name: str):
    """(model, tokenizer): a tiny random model built in code, an embedded model, a hub id or a path."""
    if name in models.TINY_CAUSAL_LMS:
        return models.tiny_causal_lm(name)
    path = models.resolve_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tokenizer


def train(model_name: str, steps: int, rank: int, device: str) -> list[dict[str, float]]:
    """Train `steps` optimizer steps on the embedded arithmetic problems; return the per-step losses."""
    torch.manual_seed(0)
    model, tokenizer = load(model_name)
    model = adapters.prepare_model(model, adapters.AdapterConfig(method="pissa", r=rank, alpha=rank)).to(
        device
    )
    reg_cfg, lambdas = preset("iclr2026", "nlg")  # λ = 0.025 / 0.005 / 0.005, KL T = 2, top-20, k = 10
    rows = data.arithmetic_word_problems(8 * steps)
    dataset = data.build_dataset(rows, tokenizer, "query", "response", max_length=128)
    loader = DataLoader(
        dataset.with_format(columns=["input_ids", "labels"]).to_list(),
        batch_size=8,
        collate_fn=data.CausalLMCollator(tokenizer.pad_token_id),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    history = []
    model.train()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = model(**batch)  # task loss: mean NLL of the response tokens
        with adapters.reference_mode(model) as reference:  # the frozen pre-trained function, no grad
            ref_logits = reference(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        # Logit t predicts token t+1: shift, and keep the rows the task loss is computed on.
        mask = batch["labels"][:, 1:] != data.IGNORE_INDEX  # (B, T-1)
        terms = regularizer_terms(outputs.logits[:, :-1], ref_logits[:, :-1], mask, reg_cfg)
        loss = outputs.loss + sum(lambdas[name] * terms[name] for name in terms)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(
            {"task_loss": outputs.loss.item(), **{f"{k}_loss": v.item() for k, v in terms.items()}}
        )
        print(" ".join(f"{k}={v:.6g}" for k, v in history[-1].items()))
    return history


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="tiny-llama", help="tiny-llama | smollm2-135m-instruct | hub id | path"
    )
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps of 8 sequences")
    parser.add_argument("--rank", type=int, default=8, help="adapter rank r (alpha = r)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    return train(args.model, args.steps, args.rank, args.device)


if __name__ == "__main__":
    main()
