"""Invariants of balora/regularizers.py: every term against a brute-force loop, masking, chunking,
bf16, edge cases, presets and config validation (docs/method.md §3)."""

import dataclasses
import math
import warnings

import pytest
import torch

from balora import regularizers
from balora.regularizers import (
    PRESETS,
    ConstantTermWarning,
    RegularizerConfig,
    constant_terms,
    preset,
    regularizer_terms,
)

# ------------------------------------------------------------------ brute-force references
# Written as per-row / per-entry loops straight from docs/method.md §3, in float64.


def _softmax_row(z):
    exps = [torch.exp(z[v] - z.max()) for v in range(z.numel())]
    total = sum(exps)
    return [e / total for e in exps]


def brute_kl(z, z_ref, temperature):
    total = 0.0
    for i in range(z.shape[0]):
        p = _softmax_row(z[i] / temperature)
        q = _softmax_row(z_ref[i] / temperature)
        total = total + sum(q[v] * (torch.log(q[v]) - torch.log(p[v])) for v in range(z.shape[1]))
    return temperature**2 * total / z.shape[0]


def brute_mse_normalized(z, z_ref):
    total = 0.0
    for i in range(z.shape[0]):
        a = z[i] / torch.sqrt(sum(z[i][v] ** 2 for v in range(z.shape[1])))
        b = z_ref[i] / torch.sqrt(sum(z_ref[i][v] ** 2 for v in range(z.shape[1])))
        total = total + sum((a[v] - b[v]) ** 2 for v in range(z.shape[1]))
    return total / (z.shape[0] * z.shape[1])


def brute_entropy(z, top_k=None):
    total = 0.0
    for i in range(z.shape[0]):
        order = sorted(range(z.shape[1]), key=lambda v, row=z[i]: -row[v].item())
        keep = order if top_k is None else order[:top_k]
        p = _softmax_row(z[i][keep])
        total = total + sum(-pv * torch.log(pv) for pv in p)
    return -total / z.shape[0]


def brute_covariance(z):
    n, d = z.shape
    mean = [sum(z[k][a] for k in range(n)) / n for a in range(d)]
    total = 0.0
    for a in range(d):
        for b in range(d):
            if a != b:
                c_ab = sum((z[k][a] - mean[a]) * (z[k][b] - mean[b]) for k in range(n)) / (n - 1)
                total = total + c_ab**2
    return total / d


def brute_svd(z, k, normalizer):
    s = torch.linalg.svdvals(z)
    denominator = s.sum() if normalizer == "nuclear" else torch.linalg.norm(z)  # Frobenius
    return -s[:k].sum() / denominator


def brute_terms(z, z_ref, cfg):
    if cfg.consistency == "kl":
        consistency = brute_kl(z, z_ref, cfg.temperature)
    else:
        consistency = brute_mse_normalized(z, z_ref)
    if cfg.diversity == "covariance":
        diversity = brute_covariance(z)
    else:
        diversity = brute_entropy(z, cfg.entropy_top_k if cfg.diversity == "topk_entropy" else None)
    return {
        "consistency": consistency,
        "diversity": diversity,
        "svd": brute_svd(z, cfg.svd_top_k, cfg.svd_normalizer),
    }


# ------------------------------------------------------------------ helpers

CONFIGS = [
    RegularizerConfig(),  # ICLR-2026 NLG: kl T=2, topk_entropy, frobenius
    RegularizerConfig(
        consistency="kl", temperature=1.0, diversity="entropy", svd_top_k=3, svd_normalizer="nuclear"
    ),
    RegularizerConfig(
        consistency="mse_normalized", diversity="covariance", svd_top_k=2, svd_normalizer="nuclear"
    ),
    RegularizerConfig(
        consistency="kl", temperature=0.7, diversity="topk_entropy", entropy_top_k=3, svd_top_k=2
    ),
]
CONFIG_IDS = ["iclr-nlg", "v5-nlg", "mse-cov-nuclear", "topk3-frob"]


def _nlg_batch(b, t, d, valid, seed=0, dtype=torch.float64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(b, t, d, generator=g, dtype=dtype)).requires_grad_(True)
    ref = scale * torch.randn(b, t, d, generator=g, dtype=dtype)
    mask = torch.zeros(b * t, dtype=torch.bool)
    mask[torch.randperm(b * t, generator=g)[:valid]] = True
    return logits, ref, mask.view(b, t)


def _value_and_grad(logits, ref, mask, cfg, term, **kwargs):
    logits = logits.detach().clone().requires_grad_(True)
    value = regularizer_terms(logits, ref, mask, cfg, **kwargs)[term]
    (grad,) = torch.autograd.grad(value, logits)
    return value.detach(), grad


# ------------------------------------------------------------------ each term vs brute force


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("shape", [(2, 4, 9, 5), (3, 5, 4, 11)], ids=["N<D", "N>D"])  # (B, T, D, N)
@pytest.mark.parametrize("term", ["consistency", "diversity", "svd"])
def test_terms_match_brute_force_value_and_gradient(cfg, shape, term):
    b, t, d, n = shape
    logits, ref, mask = _nlg_batch(b, t, d, n)
    value, grad = _value_and_grad(logits, ref, mask, cfg, term)

    x = logits.detach().clone().requires_grad_(True)
    expected = brute_terms(x[mask], ref[mask], cfg)[term]
    (expected_grad,) = torch.autograd.grad(expected, x)

    assert value.dtype == torch.float32 and value.dim() == 0
    # Softmax-family terms run in fp32 (tolerance ~1e-5), Gram terms in float64.
    torch.testing.assert_close(value.double(), expected.detach(), rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=2e-4, atol=2e-6)
    assert torch.all(grad[~mask] == 0)


def test_nlu_path_matches_brute_force_and_nlg_layout():
    cfg = RegularizerConfig(
        task="nlu",
        consistency="kl",
        temperature=2.0,
        diversity="covariance",
        svd_top_k=2,
        svd_normalizer="nuclear",
    )
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64)  # (B, C)
    ref = torch.randn(7, 4, generator=g, dtype=torch.float64)
    for term in ("consistency", "diversity", "svd"):
        value, grad = _value_and_grad(logits, ref, None, cfg, term)
        x = logits.clone().requires_grad_(True)
        expected = brute_terms(x, ref, cfg)[term]
        (expected_grad,) = torch.autograd.grad(expected, x)
        torch.testing.assert_close(value.double(), expected.detach(), rtol=2e-5, atol=2e-6)
        torch.testing.assert_close(grad, expected_grad, rtol=2e-4, atol=2e-6)
        # The same rows as a one-sequence NLG batch with an all-True mask give the same numbers.
        nlg_cfg = dataclasses.replace(cfg, task="nlg")
        value_nlg, grad_nlg = _value_and_grad(
            logits[None], ref[None], torch.ones(1, 7, dtype=torch.bool), nlg_cfg, term
        )
        torch.testing.assert_close(value_nlg, value)
        torch.testing.assert_close(grad_nlg[0], grad)
    # An NLU (B,) bool mask drops examples exactly like removing them.
    keep = torch.tensor([True, False, True, True, False, True, True])
    full = regularizer_terms(logits, ref, keep, cfg)
    subset = regularizer_terms(logits[keep], ref[keep], None, cfg)
    for term in full:
        torch.testing.assert_close(full[term], subset[term])


# ------------------------------------------------------------------ masking, chunking, dtype


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_masked_rows_change_neither_value_nor_gradient(cfg):
    logits, ref, mask = _nlg_batch(3, 6, 8, 7, seed=2, dtype=torch.float32)
    garbage = logits.detach().clone()
    garbage_ref = ref.clone()
    fill = torch.tensor([1e30, -1e30, float("inf"), float("nan")])
    masked = (~mask).nonzero(as_tuple=True)
    garbage[masked] = fill[torch.arange(masked[0].numel() * 8) % 4].view(-1, 8)
    garbage_ref[masked] = -garbage[masked]
    for term in ("consistency", "diversity", "svd"):
        clean_value, clean_grad = _value_and_grad(logits, ref, mask, cfg, term)
        dirty_value, dirty_grad = _value_and_grad(garbage, garbage_ref, mask, cfg, term)
        torch.testing.assert_close(dirty_value, clean_value, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(dirty_grad[mask], clean_grad[mask], rtol=1e-6, atol=1e-7)
        assert torch.all(dirty_grad[~mask] == 0), "masked rows must get exactly zero gradient"


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("shape", [(2, 8, 20, 13), (4, 8, 5, 29)], ids=["N<D", "N>D"])
def test_chunked_equals_unchunked(cfg, shape):
    b, t, d, n = shape
    logits, ref, mask = _nlg_batch(b, t, d, n, seed=3, dtype=torch.float32)
    small = dataclasses.replace(cfg, chunk_size=3)
    large = dataclasses.replace(cfg, chunk_size=10**6)
    for term in ("consistency", "diversity", "svd"):
        v_small, g_small = _value_and_grad(logits, ref, mask, small, term)
        v_large, g_large = _value_and_grad(logits, ref, mask, large, term)
        torch.testing.assert_close(v_small, v_large, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g_small, g_large, rtol=1e-4, atol=1e-6)


def _kept_gradients(tensor):
    """The N × V gradients the fused KL/top-K entropy function keeps from its forward (ctx attributes)."""
    kept, stack, seen = [], [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        kept += [
            t for t in (getattr(node, "grad_kl", None), getattr(node, "top_grad", None)) if t is not None
        ]
        stack += [next_node for next_node, _ in node.next_functions]
    return kept


def test_no_full_size_upcast_copy_is_kept_for_backward():
    """What autograd saves is O(N²) (the Gram), never an O(N·V) fp32 copy; the one N × V tensor kept is
    the KL's gradient, computed in the forward, in the logits' dtype (bf16 here), the size of the
    gradient the backward returns anyway."""
    b, t, v = 2, 16, 4000
    logits, ref, mask = _nlg_batch(b, t, v, 30, seed=4, dtype=torch.bfloat16)
    saved = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    inputs = {logits.untyped_storage().data_ptr(), ref.untyped_storage().data_ptr()}
    for diversity in ("topk_entropy", "entropy", "covariance"):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            terms = regularizer_terms(logits, ref, mask, RegularizerConfig(diversity=diversity, chunk_size=8))
        own = sum(nbytes for ptr, nbytes in saved.items() if ptr not in inputs)
        n = int(mask.sum())
        assert own <= 4 * 8 * n * n + 4096, (diversity, own)  # a few float64 N×N matrices
        assert own < 0.1 * n * v * 4  # far below one fp32 copy of the valid rows
        kept = _kept_gradients(terms["consistency"])
        assert [(t.dtype, t.shape) for t in kept if t.numel() > n * 20] == [(torch.bfloat16, (n, v))]
        assert sum(t.numel() * t.element_size() for t in kept) <= n * v * 2 + n * 20 * 4
        sum(terms.values()).backward()
        assert torch.isfinite(logits.grad).all()
        logits.grad = None


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_bf16_is_finite_and_matches_fp32_on_the_same_values(cfg):
    logits, ref, mask = _nlg_batch(2, 8, 64, 11, seed=5, dtype=torch.float32, scale=30.0)
    with torch.no_grad():
        # One row with a spread that underflows softmax in bf16: softmax().log() gives -inf here.
        row = mask.nonzero()[0]
        logits[row[0], row[1]] = torch.linspace(-200, 200, 64)
    lb, rb = logits.detach().bfloat16(), ref.bfloat16()
    assert torch.isinf(torch.softmax(lb[row[0], row[1]], -1).log()).any()  # the bug being avoided
    for term in ("consistency", "diversity", "svd"):
        v16, g16 = _value_and_grad(lb, rb, mask, cfg, term)
        v32, g32 = _value_and_grad(lb.float(), rb.float(), mask, cfg, term)
        assert v16.dtype == torch.float32 and torch.isfinite(v16)
        assert g16.dtype == torch.bfloat16 and torch.isfinite(g16).all()
        torch.testing.assert_close(v16, v32, rtol=1e-5, atol=1e-6)  # upcast before any arithmetic
        torch.testing.assert_close(g16.float(), g32, rtol=1e-2, atol=1e-5)  # gradient rounded to bf16
        # And against the unrounded fp32 logits: only the input rounding separates them.
        v_ref, _ = _value_and_grad(logits, ref, mask, cfg, term)
        torch.testing.assert_close(v16, v_ref, rtol=5e-2, atol=5e-2)


# ------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_all_masked_batch_gives_zeros_with_zero_finite_gradient(cfg):
    logits, ref, _ = _nlg_batch(2, 3, 6, 0, dtype=torch.bfloat16)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    regularizers._WARNED.clear()
    with pytest.warns(ConstantTermWarning, match="no valid rows"):
        terms = regularizer_terms(logits, ref, mask, cfg)
    for term, value in terms.items():
        assert value.item() == 0.0, term
    sum(terms.values()).backward()
    assert torch.all(logits.grad == 0)


@pytest.mark.parametrize("consistency", ["kl", "mse_normalized"])
def test_consistency_is_zero_with_zero_gradient_when_logits_equal(consistency):
    logits, _, mask = _nlg_batch(2, 5, 7, 6, seed=6, dtype=torch.float32)
    cfg = RegularizerConfig(consistency=consistency)
    value, grad = _value_and_grad(logits, logits.detach().clone(), mask, cfg, "consistency")
    assert abs(value.item()) < 1e-6
    assert grad.abs().max() < 1e-6
    # ...and positive when they differ.
    other, _ = _value_and_grad(logits, logits.detach() + torch.randn_like(logits), mask, cfg, "consistency")
    assert other > 1e-3


def test_ref_logits_get_no_gradient_and_none_means_no_consistency():
    logits, ref, mask = _nlg_batch(2, 5, 7, 6, seed=7, dtype=torch.float32)
    ref = ref.clone().requires_grad_(True)
    terms = regularizer_terms(logits, ref, mask, RegularizerConfig())
    sum(terms.values()).backward()
    assert ref.grad is None
    assert logits.grad is not None and logits.grad.abs().sum() > 0

    with_ref = regularizer_terms(logits, ref, mask, RegularizerConfig())
    without = regularizer_terms(logits, None, mask, RegularizerConfig())
    assert without["consistency"].item() == 0.0 and without["consistency"].requires_grad
    for term in ("diversity", "svd"):
        torch.testing.assert_close(without[term], with_ref[term])


def test_terms_argument_skips_work_and_returns_zeros():
    logits, ref, mask = _nlg_batch(2, 5, 7, 6, seed=8, dtype=torch.float32)
    full = regularizer_terms(logits, ref, mask, RegularizerConfig())
    only_svd = regularizer_terms(logits, ref, mask, RegularizerConfig(), terms=("svd",))
    assert only_svd["consistency"].item() == 0.0 and only_svd["diversity"].item() == 0.0
    torch.testing.assert_close(only_svd["svd"], full["svd"])
    with pytest.raises(ValueError, match="unknown regularizer terms"):
        regularizer_terms(logits, ref, mask, RegularizerConfig(), terms=("svd", "kl"))


@pytest.mark.filterwarnings("ignore::balora.regularizers.ConstantTermWarning")
def test_svd_known_spectra_and_bounds():
    z = torch.diag(torch.tensor([3.0, 2.0, 1.0]))  # σ = 3, 2, 1
    nuclear = RegularizerConfig(task="nlu", diversity="covariance", svd_top_k=1, svd_normalizer="nuclear")
    frobenius = RegularizerConfig(task="nlu", diversity="covariance", svd_top_k=1, svd_normalizer="frobenius")
    assert regularizer_terms(z, None, None, nuclear)["svd"].item() == pytest.approx(-0.5, abs=1e-7)
    assert regularizer_terms(z, None, None, frobenius)["svd"].item() == pytest.approx(
        -3 / math.sqrt(14), abs=1e-7
    )
    k2 = RegularizerConfig(task="nlu", diversity="covariance", svd_top_k=2, svd_normalizer="frobenius")
    assert regularizer_terms(z, None, None, k2)["svd"].item() == pytest.approx(-5 / math.sqrt(14), abs=1e-7)

    g = torch.Generator().manual_seed(9)
    for _ in range(20):
        n, d, k = (int(v) for v in torch.randint(1, 12, (3,), generator=g))
        x = torch.randn(n, d, generator=g) * float(torch.rand(1, generator=g) * 50)
        nuc = regularizer_terms(
            x, None, None, RegularizerConfig(task="nlu", svd_top_k=k, svd_normalizer="nuclear")
        )
        fro = regularizer_terms(
            x, None, None, RegularizerConfig(task="nlu", svd_top_k=k, svd_normalizer="frobenius")
        )
        assert -1 - 1e-6 <= nuc["svd"].item() <= 0
        assert -math.sqrt(k) - 1e-6 <= fro["svd"].item() <= 0


def test_svd_rank_deficient_and_zero_matrices_have_finite_gradients():
    g = torch.Generator().manual_seed(10)
    base = torch.randn(2, 6, generator=g, dtype=torch.float64)
    z = torch.cat([base, base, 2 * base[:1]]).requires_grad_(True)  # (5, 6), rank 2
    cfg = RegularizerConfig(task="nlu", diversity="covariance", svd_top_k=1, svd_normalizer="nuclear")
    value = regularizer_terms(z, None, None, cfg)["svd"]
    torch.testing.assert_close(value.double(), brute_svd(z.detach(), 1, "nuclear"), rtol=1e-6, atol=1e-7)
    (grad,) = torch.autograd.grad(value, z)
    assert torch.isfinite(grad).all()
    # k ≥ rank: the nuclear ratio is exactly 1.
    k3 = RegularizerConfig(task="nlu", svd_top_k=3, svd_normalizer="nuclear")
    assert regularizer_terms(z, None, None, k3)["svd"].item() == pytest.approx(-1.0, abs=1e-6)

    zero = torch.zeros(4, 6, requires_grad=True)
    for normalizer in ("nuclear", "frobenius"):
        terms = regularizer_terms(
            zero,
            None,
            None,
            RegularizerConfig(task="nlu", svd_top_k=2, svd_normalizer=normalizer),
            terms=("svd",),
        )
        assert terms["svd"].item() == 0.0
        (grad,) = torch.autograd.grad(terms["svd"], zero)
        assert torch.isfinite(grad).all()


def test_covariance_with_one_row_is_zero_and_warns_once():
    cfg = RegularizerConfig(task="nlu", diversity="covariance", svd_top_k=1)
    x = torch.randn(1, 4, requires_grad=True)
    regularizers._WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            value = regularizer_terms(x, None, None, cfg)["diversity"]
    assert value.item() == 0.0
    (grad,) = torch.autograd.grad(value, x)
    assert torch.all(grad == 0)
    relevant = [
        w for w in caught if issubclass(w.category, ConstantTermWarning) and "covariance" in str(w.message)
    ]
    assert len(relevant) == 1


def test_constant_terms_and_warn_once_per_term_and_reason():
    nlu = RegularizerConfig(task="nlu", diversity="covariance", svd_top_k=5, svd_normalizer="nuclear")
    assert constant_terms(nlu, 2) == ["svd"]  # binary classification: rank ≤ 2 ≤ k
    assert constant_terms(nlu, 1) == ["consistency", "diversity", "svd"]  # STS-B regression
    assert constant_terms(nlu, 6) == []
    assert constant_terms(RegularizerConfig(), 32000) == []
    assert constant_terms(RegularizerConfig(), 1) == ["consistency", "diversity", "svd"]
    assert constant_terms(RegularizerConfig(entropy_top_k=1), 100) == ["diversity"]
    assert (
        constant_terms(RegularizerConfig(svd_normalizer="frobenius", svd_top_k=10), 5) == []
    )  # not constant
    with pytest.raises(ValueError):
        constant_terms(nlu, 0)

    x = torch.randn(8, 2, requires_grad=True)
    regularizers._WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            terms = regularizer_terms(x, x.detach() + 1, None, nlu)
    svd_warnings = [
        w for w in caught if issubclass(w.category, ConstantTermWarning) and "svd" in str(w.message)
    ]
    assert len(svd_warnings) == 1
    assert terms["svd"].item() == pytest.approx(-1.0, abs=1e-6)
    (grad,) = torch.autograd.grad(terms["svd"], x)
    assert grad.abs().max() < 1e-6
    # Not warned when the constant term is not requested.
    regularizers._WARNED.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConstantTermWarning)
        regularizer_terms(x, x.detach() + 1, None, nlu, terms=("consistency", "diversity"))


# ------------------------------------------------------------------ presets and validation


def test_presets_match_method_table():
    table = {  # docs/method.md §3 "Hyperparameters reported"
        ("iclr2026", "nlg"): (
            (0.025, 0.005, 0.005),
            dict(
                consistency="kl",
                temperature=2.0,
                diversity="topk_entropy",
                entropy_top_k=20,
                svd_top_k=10,
                svd_normalizer="frobenius",
            ),
        ),
        ("iclr2026", "nlu"): (
            (0.15, 0.03, 0.03),
            dict(
                consistency="kl",
                temperature=2.0,
                diversity="covariance",
                svd_top_k=5,
                svd_normalizer="nuclear",
            ),
        ),
        ("v5", "nlg"): (
            (1e-4, 3e-4, 1e-4),
            dict(
                consistency="kl", temperature=1.0, diversity="entropy", svd_top_k=3, svd_normalizer="nuclear"
            ),
        ),
        ("v5", "nlu"): (
            (0.1, 0.01, 0.01),
            dict(consistency="mse_normalized", diversity="covariance", svd_top_k=5, svd_normalizer="nuclear"),
        ),
    }
    for (name, task), (lambdas, fields) in table.items():
        cfg, got = preset(name, task)
        assert cfg.task == task
        assert got == dict(zip(("consistency", "diversity", "svd"), lambdas, strict=True))
        for field, expected in fields.items():
            assert getattr(cfg, field) == expected, (name, task, field)
    assert set(PRESETS) == {"iclr2026", "v5", "none"}
    for task in ("nlg", "nlu"):
        _, lambdas = preset("none", task)
        assert lambdas == {"consistency": 0.0, "diversity": 0.0, "svd": 0.0}
    # preset() hands out copies: editing them cannot change the table.
    _, lambdas = preset("iclr2026", "nlg")
    lambdas["svd"] = 1.0
    assert preset("iclr2026", "nlg")[1]["svd"] == 0.005
    with pytest.raises(ValueError, match="unknown regularizer preset"):
        preset("v6", "nlg")
    with pytest.raises(ValueError, match="task"):
        preset("v5", "vision")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task": "cls"},
        {"consistency": "js"},
        {"diversity": "variance"},
        {"svd_normalizer": "spectral"},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"temperature": float("inf")},
        {"temperature": "2"},
        {"temperature": True},
        {"entropy_top_k": 0},
        {"entropy_top_k": 2.5},
        {"svd_top_k": 0},
        {"svd_top_k": True},
        {"chunk_size": 0},
    ],
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RegularizerConfig(**kwargs)


def test_invalid_inputs_raise():
    logits, ref, mask = _nlg_batch(2, 3, 4, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match="task='nlu' expects"):
        regularizer_terms(logits, ref, mask, RegularizerConfig(task="nlu"))
    with pytest.raises(ValueError, match="task='nlg' expects"):
        regularizer_terms(logits[0], ref[0], None, RegularizerConfig())
    with pytest.raises(ValueError, match="ref_logits shape"):
        regularizer_terms(logits, ref[:, :2], mask, RegularizerConfig())
    with pytest.raises(ValueError, match="mask must be a bool"):
        regularizer_terms(logits, ref, mask.long(), RegularizerConfig())
    with pytest.raises(ValueError, match="mask shape"):
        regularizer_terms(logits, ref, mask[:, :2], RegularizerConfig())
    with pytest.raises(TypeError, match="RegularizerConfig"):
        regularizer_terms(logits, ref, mask, {"task": "nlg"})


# ------------------------------------------------------------------ the top-k (LOBPCG) eigensolver


@pytest.mark.parametrize("shape", [(4, 30, 200, 90), (2, 40, 60, 70)], ids=["N<D", "N>D"])  # (B, T, D, N)
def test_lobpcg_svd_equals_full_eigh_and_brute_force_in_value_and_gradient(shape):
    b, t, d, n = shape
    logits, ref, mask = _nlg_batch(b, t, d, n, seed=3)
    eigh_cfg = RegularizerConfig(svd_top_k=10, svd_normalizer="frobenius")
    lobpcg_cfg = dataclasses.replace(eigh_cfg, svd_eigensolver="lobpcg")
    rng_before = torch.get_rng_state()
    value, grad = _value_and_grad(logits, ref, mask, lobpcg_cfg, "svd", terms=["svd"])
    assert torch.equal(torch.get_rng_state(), rng_before)  # its start block uses its own generator
    eigh_value, eigh_grad = _value_and_grad(logits, ref, mask, eigh_cfg, "svd", terms=["svd"])
    torch.testing.assert_close(value, eigh_value, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, eigh_grad, rtol=1e-6, atol=1e-9)
    x = logits.detach().clone().requires_grad_(True)
    expected = brute_svd(x[mask], 10, "frobenius")
    (expected_grad,) = torch.autograd.grad(expected, x)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)


def test_lobpcg_needs_the_frobenius_form_and_falls_back_below_3k_rows_or_when_not_converged(monkeypatch):
    with pytest.raises(ValueError, match="needs svd_normalizer 'frobenius'"):
        RegularizerConfig(svd_normalizer="nuclear", svd_eigensolver="lobpcg")
    with pytest.raises(ValueError, match="svd_eigensolver"):
        RegularizerConfig(svd_eigensolver="power")
    cfg = RegularizerConfig(svd_top_k=10, svd_eigensolver="lobpcg")
    eigh_cfg = dataclasses.replace(cfg, svd_eigensolver="eigh")
    small = _nlg_batch(2, 10, 50, 25, seed=4)  # N = 25 < 3k: LOBPCG does not apply, eigh is used
    torch.testing.assert_close(
        _value_and_grad(*small, cfg, "svd")[1], _value_and_grad(*small, eigh_cfg, "svd")[1]
    )
    # A solver that returns unconverged vectors: the residual check catches it and eigh answers.
    monkeypatch.setattr(torch, "lobpcg", lambda gram, X, largest: (None, torch.linalg.qr(X)[0]))
    monkeypatch.setattr(regularizers, "_WARNED", set())
    batch = _nlg_batch(4, 30, 200, 90, seed=5)
    with pytest.warns(RuntimeWarning, match="LOBPCG did not converge"):
        value, grad = _value_and_grad(*batch, cfg, "svd")
    eigh_value, eigh_grad = _value_and_grad(*batch, eigh_cfg, "svd")
    torch.testing.assert_close(value, eigh_value)
    torch.testing.assert_close(grad, eigh_grad)


def test_training_arguments_pass_the_eigensolver_and_keep_it_out_of_the_presets(tmp_path):
    from balora.trainer import BALoRATrainingArguments

    args = BALoRATrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", regularizer_preset="iclr2026"
    )
    assert args.svd_eigensolver is None and args.regularizer_config().svd_eigensolver == "eigh"
    args = BALoRATrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        regularizer_preset="iclr2026",
        svd_eigensolver="lobpcg",
    )
    assert args.regularizer_config().svd_eigensolver == "lobpcg"
    with pytest.raises(ValueError, match="needs svd_normalizer 'frobenius'"):
        BALoRATrainingArguments(
            output_dir=str(tmp_path),
            use_cpu=True,
            report_to="none",
            regularizer_preset="iclr2026",
            regularizer_task="nlu",
            svd_eigensolver="lobpcg",
        )


# ------------------------------------------------------------------ the fused KL / top-K entropy pass


@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_fused_softmax_terms_on_gathered_rows_match_brute_force(chunk_size):
    """The trainer's layout: (1, N, V) with every row valid, where chunks are views, not gathers."""
    cfg = RegularizerConfig(entropy_top_k=4, chunk_size=chunk_size)
    logits, ref, _ = _nlg_batch(1, 7, 12, 7, seed=11)
    for term, brute in (
        ("consistency", lambda z: brute_kl(z, ref[0], cfg.temperature)),
        ("diversity", lambda z: brute_entropy(z, cfg.entropy_top_k)),
    ):
        value, grad = _value_and_grad(logits, ref, None, cfg, term)
        z = logits.detach()[0].clone().requires_grad_(True)
        expected = brute(z)
        (expected_grad,) = torch.autograd.grad(expected, z)
        torch.testing.assert_close(value.double(), expected.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad[0], expected_grad, rtol=1e-5, atol=1e-7)  # fp32 inside
    both = regularizer_terms(logits, ref, None, cfg, terms=("consistency", "diversity"))
    (both_grad,) = torch.autograd.grad(2 * both["consistency"] + 3 * both["diversity"], logits)
    _, g_kl = _value_and_grad(logits, ref, None, cfg, "consistency")
    _, g_ent = _value_and_grad(logits, ref, None, cfg, "diversity")
    torch.testing.assert_close(both_grad, 2 * g_kl + 3 * g_ent)


def test_fused_softmax_terms_without_grad_and_a_second_backward_is_refused():
    cfg = RegularizerConfig()
    logits, ref, mask = _nlg_batch(2, 5, 30, 6, seed=12)
    with torch.no_grad():
        plain = regularizer_terms(logits, ref, mask, cfg)
    value = regularizer_terms(logits, ref, mask, cfg)
    for term in ("consistency", "diversity"):
        torch.testing.assert_close(plain[term], value[term].detach())
    total = value["consistency"] + value["diversity"]
    total.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through these BA-LoRA terms runs once"):
        total.backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kl_reuses_its_buffers_across_chunks_row_for_row(dtype):
    """The fused pass writes each chunk's intermediates into buffers every chunk reuses (the kept fp32
    gradient itself, or a scratch buffer for bf16 logits): a chunk of 3 rows, with a shorter last
    chunk, gives each row the same gradient, bit for bit, as one chunk of every row."""
    logits, ref, mask = _nlg_batch(2, 8, 40, 11, seed=21, dtype=dtype)
    grads, values = [], []
    for chunk_size in (3, 1024):
        cfg = RegularizerConfig(entropy_top_k=4, chunk_size=chunk_size)
        x = logits.detach().clone().requires_grad_(True)
        terms = regularizer_terms(x, ref, mask, cfg, terms=("consistency", "diversity"))
        (terms["consistency"] + terms["diversity"]).backward()
        grads.append(x.grad)
        values.append(terms["consistency"].detach())
    assert grads[0].dtype == dtype and torch.equal(grads[0], grads[1])
    assert grads[0][mask].abs().sum() > 0 and torch.all(grads[0][~mask] == 0)
    torch.testing.assert_close(values[0], values[1], rtol=1e-6, atol=1e-7)  # the sum's order differs
