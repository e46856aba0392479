"""How the student's forward yields the rows the BA-LoRA regularisers read (docs/method.md §3).

Shapes: B examples, T tokens, V vocabulary, H hidden size, N supervised rows.

NLG terms are computed on the N shifted, response-only positions (the logit at t predicts token t+1; a
row is valid where labels[t+1] != -100), taken as one (1, N, V) tensor so that the terms' backward
writes N×V gradients, not B×T×V ones. There are three ways to get them, chosen once per model
(`RowCapture`), because no single one is both the cheapest and available everywhere:

* "rows-only head": where the logits are a plain linear map of the last hidden state
  (`ROWS_ONLY_HEAD_MODEL_TYPES`, no soft-capping), a pre-hook narrows the LM head's input to the N rows,
  so no B×T×V logits are made at all; the task loss is the causal-LM cross-entropy on those rows. It
  equals Trainer.compute_loss only up to float rounding (the head's matmul has another shape), and the
  caller gets no (B, T, V) logits, so it is not used where either matters (`rows_only_lm_head` off, a
  label smoother or custom loss, an evaluation step that wants the outputs).
* "row tap": the same models with the full head: `balora._kernels.RowsTap` takes the rows at the head's
  output and adds their gradient to the task loss's at the N rows. The loss is the Trainer's bit for
  bit, and the backward avoids the B×T×V zeros-and-sum that autograd makes for a gather.
* "gather": any other model (and the fallback when the head ran twice or on other positions): the rows
  are gathered from the returned logits. Always correct, the most memory.

NLU needs none of this: the rows are the examples, the columns the classes.

The hidden-space SVD term (`balora.regularizers.svd_loss_hidden`) needs the LM head's input H at the
same rows: it is exact where the logits are a frozen, bias-free linear map Z = H Wᵀ (`hidden_svd_head`).
The reference logits are taken on the N rows only wherever the head is such a linear map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from balora._kernels import RowsTap

# Decoder LMs whose logits are `lm_head(last_hidden_state)` with nothing after it (no soft-capping or
# logit scaling), so the head may be applied to the N supervised rows only.
ROWS_ONLY_HEAD_MODEL_TYPES = ("llama", "mistral", "gemma", "qwen2", "qwen3")

Rows = tuple[torch.Tensor, torch.Tensor] | None  # NLG: (N,), (N,) indices (b, t); NLU: None


@dataclass(frozen=True)
class RowCapture:
    """How the student's forward yields (task loss, logit rows, hidden rows); chosen once per model.

    mode: "rows-only head" | "row tap" | "gather" (module docstring). body, head: the decoder body and
    LM head where the logits are a plain linear map of the last hidden state, else None (NLU too).
    svd_head: the head whose input gives the hidden-space SVD term, or None; svd_path: why not.
    """

    mode: str
    body: torch.nn.Module | None
    head: torch.nn.Linear | None
    svd_head: torch.nn.Linear | None
    svd_path: str

    def student(self, trainer, model, inputs: dict, rows: Rows, num_items_in_batch, full_forward, want_rows):
        """(task loss, outputs or None, logit rows or None, hidden rows or None) of one micro-batch.

        rows: the step's supervised (b, t) positions (NLG) or None (NLU: the rows are the examples).
        full_forward: Trainer.compute_loss with the model's full head, returning (loss, outputs).
        want_rows: whether a term needs the rows; without terms the tap and gather paths are the
        Trainer's loss exactly.
        """
        if self.mode == "rows-only head":
            loss, logits, hidden = forward_on_rows(
                trainer, model, inputs, rows, num_items_in_batch, self.head
            )
            return loss, None, logits, hidden
        if not want_rows:
            return (*full_forward(), None, None)
        captured, tapped, hooks = [], [], []
        if self.svd_head is not None:  # the head's input, for the hidden-space SVD term
            hooks.append(
                self.svd_head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
            )
        if self.mode == "row tap":

            def tap(module, args, output):
                if tapped or output.shape[:-1] != inputs["labels"].shape:
                    tapped.append(None)  # the head ran twice or on other positions: gather below instead
                    return None
                tapped.append(RowsTap.apply(output, *rows))
                return tapped[0][0]

            hooks.append(self.head.register_forward_hook(tap))
        try:
            loss, outputs = full_forward()
        finally:
            for hook in hooks:
                hook.remove()
        if len(tapped) == 1 and tapped[0] is not None and tapped[0][0] is outputs.logits:
            logits = tapped[0][1].unsqueeze(0)  # (1, N, V); RowsTap adds their gradient at the N rows
        else:
            logits = gather_rows(outputs.logits, rows)
        hidden = None
        if len(captured) == 1 and captured[0].shape[:-1] == outputs.logits.shape[:-1]:
            hidden = gather_rows(captured[0], rows)  # (1, N, H)
        return loss, outputs, logits, hidden

    def svd_space(self, hidden: torch.Tensor | None) -> str:
        """Where this micro-batch's SVD term runs: "hidden space" or "logits space: <why>"."""
        if self.svd_head is not None and hidden is None:
            return "logits space: the LM head ran more than once or on other positions"
        return self.svd_path

    def reference(self, model, inputs: dict, rows: Rows) -> torch.Tensor:
        """The logits of `model` (already switched to the reference) on the rows, without labels."""
        if self.body is None:
            return gather_rows(model(**inputs).logits, rows)
        hidden = self.body(**inputs).last_hidden_state  # (B, T, H)
        return self.head(hidden[rows]).unsqueeze(0)  # (1, N, V): no (B, T, V) reference logits


def choose_row_capture(
    model, task: str, rows_only_lm_head: bool, custom_loss: bool, tap_rows: bool, hidden_svd: bool
) -> tuple[RowCapture, str | None]:
    """The row capture of `model` (a peft model or the model itself) and why the rows-only head is not
    used (None when it is).

    custom_loss: a label smoother or a custom loss function is set. tap_rows, hidden_svd: False turns
    the row tap (to a gather) or the hidden-space SVD term (to the logits-space one) off.
    """
    body, head = (rows_only_head(model) if task == "nlg" else None) or (None, None)
    svd_head, svd_path = hidden_svd_head(model, task, hidden_svd)
    reason = None
    if head is None:
        reason = "the logits are not a plain linear map of the last hidden state for this model"
    elif not rows_only_lm_head:
        reason = "rows_only_lm_head is off"
    elif custom_loss:
        reason = "a label smoother or a custom loss function is set"
    if reason is None:
        mode = "rows-only head"
    else:
        mode = "row tap" if head is not None and tap_rows else "gather"
    return RowCapture(mode, body, head, svd_head, svd_path), reason


def supervised_rows(labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,), (N,) indices (b, t) of the logits that predict a supervised token, labels[b, t+1] ≠ −100."""
    if labels is None:
        raise ValueError("NLG training needs labels in every batch (-100 at the positions not trained on)")
    return (labels[:, 1:] != -100).nonzero(as_tuple=True)


def gather_rows(x: torch.Tensor, rows: Rows) -> torch.Tensor:
    """NLG: the N rows of a (B, T, D) tensor as (1, N, D); NLU (rows None): x as given."""
    return x if rows is None else x[rows].unsqueeze(0)


def forward_on_rows(
    trainer, model, inputs: dict, rows: Rows, num_items_in_batch, head: torch.nn.Linear
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's forward with the LM head on the N supervised rows only.

    A forward pre-hook narrows the head's input from (B, T, H) to the (N, H) rows that predict a label,
    so the model (and whatever wraps it: peft, DDP, DeepSpeed, autocast) runs as usual and returns
    (N, V) logits. The task loss is then Trainer.compute_loss's causal-LM loss on those rows: a sum
    over num_items_in_batch when the model takes it (× the processes when tokens are averaged across
    devices), else the mean.

    Returns:
        loss (scalar), logits (1, N, V), hidden (1, N, H): the rows the regularisers use.
    """
    narrowed: list[torch.Tensor] = []

    def narrow(module, args):
        if narrowed:
            raise RuntimeError("rows_only_lm_head: the LM head ran twice in one forward")
        narrowed.append(args[0][rows])  # (N, H)
        return (narrowed[0], *args[1:])

    hook = head.register_forward_pre_hook(narrow)
    try:
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
    finally:
        hook.remove()
    logits = outputs.logits  # (N, V)
    targets = inputs["labels"][rows[0], rows[1] + 1]
    by_items = bool(trainer.model_accepts_loss_kwargs) and num_items_in_batch is not None
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum" if by_items else "mean")
    if by_items:
        items = (
            num_items_in_batch.to(loss.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
        )
        loss = loss / items
        if trainer.args.average_tokens_across_devices:
            tp_size = trainer.get_tp_size() if hasattr(trainer, "get_tp_size") else 1
            world = (
                trainer.accelerator.num_processes // tp_size
                if trainer.args.n_gpu <= 1
                else trainer.args.n_gpu
            )
            loss = loss * world
    return loss, logits.unsqueeze(0), narrowed[0].unsqueeze(0)


def rows_only_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder body, LM head) of a causal LM (or of the peft model wrapping it), or None when the
    logits are not a plain linear map of the body's last hidden state."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(causal_lm, "config", None)
    if getattr(config, "model_type", None) not in ROWS_ONLY_HEAD_MODEL_TYPES:
        return None
    if getattr(config, "final_logit_softcapping", None) is not None:
        return None
    body = getattr(causal_lm, "model", None)
    head = causal_lm.get_output_embeddings()
    if body is None or not isinstance(head, torch.nn.Linear):
        return None
    return body, head


def hidden_svd_head(model, task: str = "nlg", enabled: bool = True) -> tuple[torch.nn.Linear | None, str]:
    """(the LM head whose input gives the SVD term in hidden space, or None; the path: "hidden space" or
    "logits space: <why>"). Needs a frozen nn.Linear without bias that produces the logits with
    nothing after it, and its whole weight on this rank."""
    body_and_head = rows_only_head(model) if enabled and task == "nlg" else None
    head = body_and_head[1] if body_and_head is not None else None
    if not enabled:
        reason = "hidden-space path disabled"
    elif task != "nlg":
        reason = "NLU heads are not handled in hidden space"
    elif head is None:
        reason = "the logits are not a plain linear map of the last hidden state for this model"
    elif type(head) is not torch.nn.Linear:
        reason = f"the LM head is a {type(head).__name__} (adapted or wrapped), not a frozen nn.Linear"
    elif head.bias is not None:
        reason = "the LM head has a bias"
    elif head.weight.requires_grad:
        reason = "the LM head is trained"
    elif tuple(head.weight.shape) != (head.out_features, head.in_features):
        reason = "the LM head's weight is partitioned (ZeRO-3)"
    else:
        return head, "hidden space"
    return None, f"logits space: {reason}"
