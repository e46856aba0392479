"""Last-hidden-layer features of a sequence classifier, for the paper's t-SNE figure.

Pooling (one H-vector per example, from the last hidden layer, before the task head):
* encoders (BERT, RoBERTa, DeBERTa, MiniLM): the first token ([CLS] / <s>) — what the heads of these
  models read (BERT's head goes through its pooler first; we take the raw last-layer state);
* decoders (GPT-2, LLaMA-style): the last non-pad token, which is the token GPT-2's classifier reads;
* encoder-decoders (T5): the mean over non-pad tokens of the encoder's last layer (the "T5 encoder"
  features of the noisy-pre-training probe).

Files: `features_step_<step>.npy` (N, H) float32 and `labels_step_<step>.npy` (N,) in the order of the
validation set.

Shapes: N examples, B batch, T tokens, H hidden size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


def pooling_for(config) -> str:
    """ "cls", "last_token" or "encoder_mean" for a transformers config (see module docstring)."""
    if getattr(config, "is_encoder_decoder", False):
        return "encoder_mean"
    if getattr(config, "model_type", "") in ("gpt2", "gpt_neo", "gptj", "llama", "mistral", "gemma", "opt"):
        return "last_token"
    return "cls"


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce (B, T, H) states to (B, H) features.

    Args:
        hidden: (B, T, H) last-layer hidden states.
        attention_mask: (B, T), 1 on real tokens. Right padding is assumed for "last_token".
        pooling: "cls" | "last_token" | "encoder_mean".
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last_token":
        last = attention_mask.long().sum(dim=1) - 1  # (B,) index of the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]
    if pooling == "encoder_mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    raise ValueError(f"unknown pooling {pooling!r}; use 'cls', 'last_token' or 'encoder_mean'")


@torch.no_grad()
def extract_features(
    model: nn.Module, dataset, collator, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Run `model` over a tokenised dataset and pool its last hidden layer.

    Returns:
        features (N, H) float32 and labels (N,) in dataset order.
    """
    config = model.config
    pooling = pooling_for(config)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features, labels = [], []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator):
            batch_labels = batch.pop("labels")
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs = model(**batch, output_hidden_states=True)
            if pooling == "encoder_mean":
                hidden = outputs.encoder_hidden_states[-1]
            else:
                hidden = outputs.hidden_states[-1]  # (B, T, H)
            pooled = pool_hidden_states(hidden, batch["attention_mask"], pooling)
            features.append(pooled.float().cpu().numpy())
            labels.append(batch_labels.cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(features).astype(np.float32), np.concatenate(labels)


def dump_features(
    model: nn.Module, dataset, collator, output_dir: str | os.PathLike, step: int | str, batch_size: int = 64
) -> Path:
    """Write features_step_<step>.npy and labels_step_<step>.npy; returns the features path."""
    features, labels = extract_features(model, dataset, collator, batch_size)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"features_step_{step}.npy"
    np.save(path, features)
    np.save(output_dir / f"labels_step_{step}.npy", labels)
    logger.info("Saved %s features %s to %s", step, features.shape, path)
    return path


class FeatureDumpCallback(TrainerCallback):
    """Dump validation-set features every `every` optimizer steps (0: never; the final dump is separate)."""

    def __init__(self, dataset, collator, output_dir: str | os.PathLike, every: int, batch_size: int = 64):
        if every < 0:
            raise ValueError(f"feature_dump_steps must be >= 0, got {every}")
        self.dataset = dataset
        self.collator = collator
        self.output_dir = output_dir
        self.every = every
        self.batch_size = batch_size

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.is_world_process_zero:
            dump_features(
                model, self.dataset, self.collator, self.output_dir, state.global_step, self.batch_size
            )
        return control
