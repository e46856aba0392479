"""The SVD term in hidden space (balora.regularizers.svd_loss_hidden / head_gram_factor): for logits
Z = H Wᵀ of a frozen linear head, σ(Z) = σ(H L) with L Lᵀ = Wᵀ W. Pinned in float64 against the
logits-space term and against the brute-force definition (svdvals of the valid rows), value and
gradient, for both normalisers and both eigen-solvers."""

import dataclasses

import pytest
import torch

from balora.regularizers import RegularizerConfig, head_gram_factor, regularizer_terms, svd_loss_hidden


def brute_svd(z, k, normalizer):
    s = torch.linalg.svdvals(z)
    denominator = s.sum() if normalizer == "nuclear" else torch.linalg.norm(z)
    return -s[:k].sum() / denominator


def _problem(b, t, hidden_dim, vocab, valid, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, hidden_dim, generator=g, dtype=torch.float64)
    weight = torch.randn(vocab, hidden_dim, generator=g, dtype=torch.float64) / hidden_dim**0.5
    mask = torch.zeros(b * t, dtype=torch.bool)
    mask[torch.randperm(b * t, generator=g)[:valid]] = True
    return hidden, weight, mask.view(b, t)


def _logits_path(hidden, weight, mask, cfg):
    h = hidden.detach().clone().requires_grad_(True)
    value = regularizer_terms(h @ weight.T, None, mask, cfg, terms=("svd",))["svd"]
    (grad,) = torch.autograd.grad(value, h)
    return value.detach(), grad


def _hidden_path(hidden, weight, mask, cfg, factor=None):
    h = hidden.detach().clone().requires_grad_(True)
    factor = head_gram_factor(weight) if factor is None else factor
    value = regularizer_terms(h @ weight.T, None, mask, cfg, terms=("svd",), hidden=h, head_factor=factor)[
        "svd"
    ]
    (grad,) = torch.autograd.grad(value, h)
    return value.detach(), grad


def _brute(hidden, weight, mask, cfg):
    h = hidden.detach().clone().requires_grad_(True)
    value = brute_svd(h[mask] @ weight.T, cfg.svd_top_k, cfg.svd_normalizer)
    (grad,) = torch.autograd.grad(value, h)
    return value.detach(), grad


# (B, T, H_dim, V, N): N < H_dim < V (the NLG case), N > H_dim (large batches: an H_dim² problem),
# and a head of rank V < H_dim (Wᵀ W singular).
SHAPES = [(2, 6, 8, 40, 7), (3, 10, 6, 40, 23), (2, 8, 12, 5, 11)]
SHAPE_IDS = ["N<H<V", "N>H", "V<H"]


def test_head_gram_factor_reproduces_wtw():
    _, weight, _ = _problem(1, 1, 12, 5, 1)  # rank 5 < 12
    factor = head_gram_factor(weight.float())
    assert factor.dtype == torch.float64 and factor.shape == (12, 12)
    torch.testing.assert_close(factor @ factor.T, weight.T @ weight, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="2-D floating-point"):
        head_gram_factor(weight[0])


@pytest.mark.parametrize("normalizer", ["frobenius", "nuclear"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_hidden_space_equals_logits_space_and_brute_force_in_value_and_gradient(shape, normalizer):
    b, t, hidden_dim, vocab, n = shape
    hidden, weight, mask = _problem(b, t, hidden_dim, vocab, n)
    cfg = RegularizerConfig(svd_top_k=3, svd_normalizer=normalizer)
    got_value, got_grad = _hidden_path(hidden, weight, mask, cfg)
    logits_value, logits_grad = _logits_path(hidden, weight, mask, cfg)
    brute_value, brute_grad = _brute(hidden, weight, mask, cfg)
    # The returned terms are float32 (as in the logits path); the gradients stay float64.
    torch.testing.assert_close(got_value, logits_value, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got_value.double(), brute_value, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got_grad, logits_grad, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(got_grad, brute_grad, rtol=1e-7, atol=1e-9)
    assert torch.all(got_grad[~mask] == 0)


def test_lobpcg_in_hidden_space_equals_eigh_and_brute_force():
    hidden, weight, mask = _problem(4, 16, 48, 200, 60, seed=1)
    eigh = RegularizerConfig(svd_top_k=4)
    lobpcg = dataclasses.replace(eigh, svd_eigensolver="lobpcg")
    v_lob, g_lob = _hidden_path(hidden, weight, mask, lobpcg)
    v_eigh, g_eigh = _hidden_path(hidden, weight, mask, eigh)
    v_brute, g_brute = _brute(hidden, weight, mask, eigh)
    torch.testing.assert_close(v_lob, v_eigh, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(v_lob.double(), v_brute, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_lob, g_brute, rtol=1e-5, atol=1e-8)


def test_public_function_on_gathered_rows_and_nlu_layout():
    hidden, weight, mask = _problem(2, 6, 8, 40, 9, seed=2)
    cfg = RegularizerConfig(svd_top_k=2, svd_normalizer="nuclear")
    factor = head_gram_factor(weight)
    rows = hidden[mask]  # (N, H_dim)
    direct = svd_loss_hidden(rows, factor, cfg, num_columns=40)
    torch.testing.assert_close(
        direct.double(), brute_svd(rows @ weight.T, 2, "nuclear"), rtol=1e-6, atol=1e-7
    )
    nlu = dataclasses.replace(cfg, task="nlu")  # (B, C) logits, (B, H_dim) hidden
    value = regularizer_terms(
        rows @ weight.T, None, None, nlu, terms=("svd",), hidden=rows, head_factor=factor
    )
    torch.testing.assert_close(value["svd"], direct)


def test_all_masked_and_zero_hidden_states_are_zero_with_finite_gradients():
    hidden, weight, mask = _problem(2, 5, 8, 40, 6, seed=3)
    cfg = RegularizerConfig()
    none_valid = torch.zeros_like(mask)
    for h, m in ((hidden, none_valid), (torch.zeros_like(hidden), mask)):
        value, grad = _hidden_path(h, weight, m, cfg)
        assert value.item() == 0.0
        assert torch.isfinite(grad).all() and torch.all(grad == 0)
    empty = svd_loss_hidden(hidden[none_valid].requires_grad_(), head_gram_factor(weight), cfg, 40)
    assert empty.item() == 0.0


def test_float32_inputs_match_the_logits_path_and_masked_garbage_is_ignored():
    hidden, weight, mask = _problem(2, 8, 16, 300, 12, seed=4)
    hidden, weight = hidden.float(), weight.float()
    garbage = hidden.clone()
    garbage[~mask] = float("nan")
    cfg = RegularizerConfig()
    v_hidden, g_hidden = _hidden_path(garbage, weight, mask, cfg)
    v_logits, g_logits = _logits_path(hidden, weight, mask, cfg)
    torch.testing.assert_close(v_hidden, v_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_hidden[mask], g_logits[mask], rtol=1e-4, atol=1e-6)
    assert torch.all(g_hidden[~mask] == 0)


def test_invalid_hidden_inputs_raise():
    hidden, weight, mask = _problem(2, 5, 8, 40, 6)
    logits, factor = hidden @ weight.T, head_gram_factor(weight)
    cfg = RegularizerConfig()
    with pytest.raises(ValueError, match="go together"):
        regularizer_terms(logits, None, mask, cfg, hidden=hidden)
    with pytest.raises(ValueError, match="logits.shape"):
        regularizer_terms(logits, None, mask, cfg, hidden=hidden[:, :3], head_factor=factor)
    with pytest.raises(ValueError, match="head_factor must be"):
        regularizer_terms(logits, None, mask, cfg, hidden=hidden, head_factor=factor[:3])
    with pytest.raises(ValueError, match=r"\(N, H_dim\)"):
        svd_loss_hidden(hidden, factor, cfg, 40)
