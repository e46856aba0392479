"""The per-term functions of balora/regularizers.py (consistency_loss, diversity_loss, svd_loss) on the
selected (N, D) rows equal the matching term of regularizer_terms, value and gradient, in float64, for
every form of each term (docs/method.md §3); their inputs are checked and their edge cases match."""

import dataclasses
import warnings

import pytest
import torch

from balora import regularizers
from balora.regularizers import (
    TERMS,
    ConstantTermWarning,
    RegularizerConfig,
    consistency_loss,
    diversity_loss,
    regularizer_terms,
    svd_loss,
)

CONFIGS = {
    "iclr-nlg": RegularizerConfig(),  # kl T=2, topk_entropy (the fused pass), frobenius
    "v5-nlg": RegularizerConfig(temperature=1.0, diversity="entropy", svd_top_k=3, svd_normalizer="nuclear"),
    "mse-cov-nuclear": RegularizerConfig(
        consistency="mse_normalized", diversity="covariance", svd_top_k=2, svd_normalizer="nuclear"
    ),
    "topk3-frob": RegularizerConfig(temperature=0.7, entropy_top_k=3, svd_top_k=2),
    "lobpcg": RegularizerConfig(svd_top_k=2, svd_eigensolver="lobpcg"),
}


def _batch(b, t, d, valid, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(b, t, d, generator=g, dtype=torch.float64)
    ref = 3 * torch.randn(b, t, d, generator=g, dtype=torch.float64)
    mask = torch.zeros(b * t, dtype=torch.bool)
    mask[torch.randperm(b * t, generator=g)[:valid]] = True
    return logits, ref, mask.view(b, t)


def _per_term(term, rows, ref_rows, cfg):
    if term == "consistency":
        return consistency_loss(rows, ref_rows, cfg)
    return {"diversity": diversity_loss, "svd": svd_loss}[term](rows, cfg)


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("shape", [(2, 8, 20, 13), (3, 10, 6, 25)], ids=["N<D", "N>D"])  # (B, T, D, N)
@pytest.mark.parametrize("chunk_size", [4, 1024])
def test_each_term_equals_the_combined_call_in_value_and_gradient(cfg, shape, chunk_size):
    cfg = dataclasses.replace(cfg, chunk_size=chunk_size)
    logits, ref, mask = _batch(*shape)
    for term in TERMS:
        # All three terms computed together (the fused KL/top-K pass runs one backward: one call each).
        x = logits.clone().requires_grad_(True)
        combined = regularizer_terms(x, ref, mask, cfg)
        (combined_grad,) = torch.autograd.grad(combined[term], x)
        rows = logits[mask].clone().requires_grad_(True)  # (N, D), the selected rows
        value = _per_term(term, rows, ref[mask], cfg)
        (grad,) = torch.autograd.grad(value, rows)
        assert value.dtype == torch.float32 and value.dim() == 0
        torch.testing.assert_close(value, combined[term].detach(), rtol=0, atol=0)
        torch.testing.assert_close(grad, combined_grad[mask], rtol=1e-12, atol=1e-15)
        assert torch.all(combined_grad[~mask] == 0)


def test_nlu_batch_is_already_the_selected_rows():
    cfg = RegularizerConfig(task="nlu", diversity="covariance", svd_top_k=2, svd_normalizer="nuclear")
    g = torch.Generator().manual_seed(1)
    logits, ref = (
        torch.randn(7, 4, generator=g, dtype=torch.float64),
        torch.randn(7, 4, generator=g, dtype=torch.float64),
    )
    combined = regularizer_terms(logits, ref, None, cfg)
    assert consistency_loss(logits, ref, cfg) == combined["consistency"]
    assert diversity_loss(logits, cfg) == combined["diversity"]
    assert svd_loss(logits, cfg) == combined["svd"]


def test_reference_gets_no_gradient():
    logits, ref, mask = _batch(2, 5, 7, 6, seed=2)
    rows, ref_rows = logits[mask].requires_grad_(True), ref[mask].requires_grad_(True)
    consistency_loss(rows, ref_rows, RegularizerConfig()).backward()
    assert ref_rows.grad is None and rows.grad.abs().sum() > 0


def test_no_rows_gives_zero_with_zero_gradient_and_warns():
    empty = torch.zeros(0, 9, dtype=torch.float64, requires_grad=True)
    cfg = RegularizerConfig()
    for term in TERMS:
        regularizers._WARNED.clear()
        with pytest.warns(ConstantTermWarning, match="no valid rows"):
            value = _per_term(term, empty, empty.detach(), cfg)
        assert value.item() == 0.0 and value.dtype == torch.float32
        (grad,) = torch.autograd.grad(value, empty)
        assert grad.shape == empty.shape


def test_covariance_of_one_row_is_zero_and_warns_once():
    cfg = RegularizerConfig(task="nlu", diversity="covariance")
    row = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    regularizers._WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            value = diversity_loss(row, cfg)
    assert value.item() == 0.0
    assert len([w for w in caught if issubclass(w.category, ConstantTermWarning)]) == 1


def test_lobpcg_applies_to_the_smaller_gram_when_rows_outnumber_columns():
    """N > D: the Gram is Zᵀ Z (D × D); LOBPCG runs when D ≥ 3k and eigh answers below that."""
    g = torch.Generator().manual_seed(3)
    for d in (4, 12):  # D < 3k = 9: eigh; D ≥ 3k: LOBPCG
        z = torch.randn(40, d, generator=g, dtype=torch.float64)
        eigh = RegularizerConfig(svd_top_k=3)
        lobpcg = dataclasses.replace(eigh, svd_eigensolver="lobpcg")
        values = []
        for cfg in (eigh, lobpcg):
            rows = z.clone().requires_grad_(True)
            value = svd_loss(rows, cfg)
            values.append((value, torch.autograd.grad(value, rows)[0]))
        torch.testing.assert_close(values[1][0], values[0][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(values[1][1], values[0][1], rtol=1e-6, atol=1e-9)
        s = torch.linalg.svdvals(z)
        torch.testing.assert_close(
            values[0][0].double(), -s[:3].sum() / torch.linalg.norm(z), rtol=1e-6, atol=1e-7
        )


def test_invalid_inputs_raise():
    logits, ref, mask = _batch(2, 3, 4, 3)
    cfg = RegularizerConfig()
    with pytest.raises(ValueError, match=r"\(N, D\) selected rows"):
        diversity_loss(logits, cfg)  # (B, T, V): select the rows first
    with pytest.raises(TypeError, match="reference_logits must be a floating-point tensor"):
        consistency_loss(logits[mask], None, cfg)
    with pytest.raises(ValueError, match="reference_logits shape"):
        consistency_loss(logits[mask], ref[mask][:2], cfg)
    with pytest.raises(TypeError, match="student_logits must be a floating-point tensor"):
        svd_loss(mask.long(), cfg)
    with pytest.raises(TypeError, match="RegularizerConfig"):
        svd_loss(logits[mask], {"task": "nlg"})
