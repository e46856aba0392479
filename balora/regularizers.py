"""The three BA-LoRA logit regularisers as pure tensor functions (method.md §3).

    L = L_task + λ1·L_consistency + λ2·L_diversity + λ3·L_svd

This module computes the three *unweighted* terms from the student's logits and the frozen
reference's logits; the caller (the trainer) owns the λ weights and their schedule.

Dimensions, named once:
    B  batch size
    T  sequence positions (NLG), already shifted by the caller so that logits[:, t] predicts the
       target at t
    V  vocabulary size (NLG columns)
    C  number of classes (NLU columns; 1 for STS-B regression)
    D  number of columns: V for NLG, C for NLU
    N  number of valid rows of the micro-batch: response-token positions (NLG) or examples (NLU)

Z ∈ R^{N×D} is the matrix of the student's logits on the valid rows, Z_ref the reference's.
Every mean is over the N valid rows; masked rows are never read (their values, even inf/NaN
garbage, change neither the terms nor their gradients, and their gradient is exactly zero).

Numerics and memory:
    * Inputs may be bf16/fp16; every term is computed in fp32 (softmax family, via log_softmax,
      never softmax().log()) or float64 (Gram matrices), upcasting one chunk at a time.
    * Rows (or, for the Gram matrices, column blocks of the same element count) are processed in
      chunks of ``cfg.chunk_size`` rows, and each chunk runs under non-reentrant activation
      checkpointing, so only one chunk's upcast copy is alive at a time in the forward *and* in the
      backward pass (the backward recomputes the chunk). A 256k-vocabulary micro-batch therefore
      costs about chunk_size × V × 4 bytes of extra memory, not B × T × V × 4. The exception is the
      KL + top-K entropy pass, which computes its gradient in the forward and keeps it as one N × V
      tensor in the logits' dtype (the size of the gradient its backward returns), so that no softmax
      is computed twice.
    * Gradients flow to ``logits`` only (and to ``hidden`` for the hidden-space SVD term);
      ``ref_logits`` is detached here.

The SVD term in hidden space: when Z = H Wᵀ with a frozen linear head W (no bias, nothing after it),
Z Zᵀ = H (Wᵀ W) Hᵀ, so with L Lᵀ = Wᵀ W (`head_gram_factor`, once per run) the singular values of Z
are exactly those of H L (N × H_dim) and ‖Z‖_F = ‖H L‖_F. `svd_loss_hidden` (or `regularizer_terms`
with ``hidden`` and ``head_factor``) then needs an N × H_dim product and a min(N, H_dim)² eigenproblem
instead of the N × N × V Gram products and an N × N one.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

TERMS = ("consistency", "diversity", "svd")
TASKS = ("nlg", "nlu")
CONSISTENCY_TYPES = ("kl", "mse_normalized")
DIVERSITY_TYPES = ("topk_entropy", "entropy", "covariance")
SVD_NORMALIZERS = ("frobenius", "nuclear")
SVD_EIGENSOLVERS = ("eigh", "lobpcg")

# eps of the per-row L2 normalisation in mse_normalized (F.normalize's default): a zero row maps to 0.
_NORM_EPS = 1e-12
# Replaces log-probabilities of -inf (a logit of -inf) so that 0·log 0 is 0 with a finite gradient.
_LOGP_FLOOR = torch.finfo(torch.float32).min


class ConstantTermWarning(UserWarning):
    """A regulariser is identically constant (zero gradient) for this configuration or batch."""


@dataclass(frozen=True)
class RegularizerConfig:
    """Which form of each regulariser to compute (method.md §3); the λ weights live elsewhere.

    Args:
        task: "nlg" (logits (B, T, V) with a (B, T) mask) or "nlu" (logits (B, C), mask None).
        consistency: "kl" = T² · mean_rows KL(softmax(Z_ref/T) ‖ softmax(Z/T)) (ICLR 2026), or
            "mse_normalized" = mean over all N·D entries of (Z/‖Z‖ − Z_ref/‖Z_ref‖)² with per-row
            L2 norms (v1-v5 NLU).
        temperature: T of the "kl" consistency (official ICLR-2026 code: 2). Ignored by
            "mse_normalized".
        diversity: "topk_entropy" (entropy of the renormalised top-K logits per row, ICLR 2026
            NLG), "entropy" (full-vocabulary entropy, v1-v5 NLG) or "covariance" (mean squared
            off-diagonal covariance of the columns, NLU). Entropy forms return −mean H, so
            minimising the loss maximises entropy.
        entropy_top_k: K of "topk_entropy" (official: 20); K ≥ D means the full row.
        svd_top_k: k of the SVD term, −Σ_{i≤k} σ_i / normaliser (ICLR NLG 10, NLU 5, early code 3).
        svd_normalizer: "nuclear" (Σ_j σ_j; L ∈ [−1, 0]) or "frobenius" (‖Z‖_F = sqrt(Σ σ_j²);
            L ∈ [−√k, 0]).
        chunk_size: rows upcast at once (memory knob only; results do not depend on it beyond
            float rounding).
        svd_eigensolver: how the SVD term gets σ² from the N×N float64 Gram matrix: "eigh" (the full
            spectrum, LAPACK/cuSOLVER; cost grows as N³) or "lobpcg" (only the top-k eigenpairs,
            for large N; "frobenius" normaliser only, since "nuclear" needs every σ). Both are exact
            up to float64 solver tolerance: lobpcg's pairs are checked by their residual and fall
            back to eigh when it is not small; below N = 3k lobpcg does not apply and eigh is used.
    """

    task: str = "nlg"
    consistency: str = "kl"
    temperature: float = 2.0
    diversity: str = "topk_entropy"
    entropy_top_k: int = 20
    svd_top_k: int = 10
    svd_normalizer: str = "frobenius"
    chunk_size: int = 1024
    svd_eigensolver: str = "eigh"

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        _check_choice("consistency", self.consistency, CONSISTENCY_TYPES)
        _check_choice("diversity", self.diversity, DIVERSITY_TYPES)
        _check_choice("svd_normalizer", self.svd_normalizer, SVD_NORMALIZERS)
        _check_choice("svd_eigensolver", self.svd_eigensolver, SVD_EIGENSOLVERS)
        if self.svd_eigensolver == "lobpcg" and self.svd_normalizer != "frobenius":
            raise ValueError("svd_eigensolver 'lobpcg' computes only the top-k σ, so it needs "
                             f"svd_normalizer 'frobenius' (the nuclear norm needs every σ), got {self.svd_normalizer!r}")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not math.isfinite(self.temperature)
            or self.temperature <= 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        for name in ("entropy_top_k", "svd_top_k", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


# ---------------------------------------------------------------------------------------------
# Presets: method.md §3 "Hyperparameters reported", as data. λ keys match regularizer_terms' keys.
# ---------------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, dict[str, dict]]] = {
    "iclr2026": {
        "nlg": {
            "config": dict(
                task="nlg",
                consistency="kl",
                temperature=2.0,
                diversity="topk_entropy",
                entropy_top_k=20,
                svd_top_k=10,
                svd_normalizer="frobenius",
            ),
            "lambdas": {"consistency": 0.025, "diversity": 0.005, "svd": 0.005},
        },
        # method.md's table gives no consistency form or temperature for ICLR-2026 NLU: this preset
        # ASSUMES the ICLR-2026 KL with the official code's T = 2 (the NLG value).
        "nlu": {
            "config": dict(
                task="nlu",
                consistency="kl",
                temperature=2.0,
                diversity="covariance",
                svd_top_k=5,
                svd_normalizer="nuclear",
            ),
            "lambdas": {"consistency": 0.15, "diversity": 0.03, "svd": 0.03},
        },
    },
    "v5": {
        "nlg": {
            "config": dict(
                task="nlg",
                consistency="kl",
                temperature=1.0,
                diversity="entropy",
                svd_top_k=3,
                svd_normalizer="nuclear",
            ),
            "lambdas": {"consistency": 1e-4, "diversity": 3e-4, "svd": 1e-4},
        },
        # The v5-era BERT-L SST-2 script.
        "nlu": {
            "config": dict(
                task="nlu",
                consistency="mse_normalized",
                temperature=1.0,
                diversity="covariance",
                svd_top_k=5,
                svd_normalizer="nuclear",
            ),
            "lambdas": {"consistency": 0.1, "diversity": 0.01, "svd": 0.01},
        },
    },
}
# "none" = plain (PiSSA/LoRA) training: all λ = 0; the config is only there to be well-formed.
PRESETS["none"] = {
    task: {"config": dict(entry["config"]), "lambdas": dict.fromkeys(TERMS, 0.0)}
    for task, entry in PRESETS["iclr2026"].items()
}


def preset(name: str, task: str) -> tuple[RegularizerConfig, dict[str, float]]:
    """Look up a named recipe of method.md §3.

    Args:
        name: "iclr2026", "v5" or "none" (all λ = 0).
        task: "nlg" or "nlu".

    Returns:
        (config, lambdas) where lambdas maps "consistency"/"diversity"/"svd" to λ1/λ2/λ3.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown regularizer preset {name!r}; choose one of {sorted(PRESETS)}")
    _check_choice("task", task, TASKS)
    entry = PRESETS[name][task]
    return RegularizerConfig(**entry["config"]), dict(entry["lambdas"])


# ---------------------------------------------------------------------------------------------
# Constant-term detection
# ---------------------------------------------------------------------------------------------

_WARNED: set[tuple[str, str]] = set()


def _constant_reasons(cfg: RegularizerConfig, num_columns: int) -> dict[str, str]:
    """{term: why it is constant} for terms with zero gradient for every input with D columns."""
    d = num_columns
    reasons: dict[str, str] = {}
    if d == 1:
        reasons["consistency"] = (
            "with one column softmax is identically 1, so the KL is 0"
            if cfg.consistency == "kl"
            else "with one column each normalised row is ±1, so the gradient is 0"
        )
    if cfg.diversity == "covariance" and d == 1:
        reasons["diversity"] = "the covariance of one column has no off-diagonal entries (term = 0)"
    elif cfg.diversity == "entropy" and d == 1:
        reasons["diversity"] = "the entropy of one column is 0"
    elif cfg.diversity == "topk_entropy" and min(cfg.entropy_top_k, d) == 1:
        reasons["diversity"] = "the entropy of the top-1 logit is 0"
    if cfg.svd_normalizer == "nuclear" and d <= cfg.svd_top_k:
        reasons["svd"] = f"D={d} ≤ k={cfg.svd_top_k}: top-k/Σσ is identically 1 (term = -1)"
    elif cfg.svd_normalizer == "frobenius" and d == 1:
        reasons["svd"] = "one column has one singular value: σ/‖Z‖_F is identically 1 (term = -1)"
    return reasons


def constant_terms(cfg: RegularizerConfig, num_columns: int) -> list[str]:
    """Names of the terms that are constant (zero gradient) for every batch with D columns.

    Cases: D = 1 makes the consistency (KL 0; normalised rows ±1), entropy and covariance terms
    constant; topk_entropy with min(K, D) = 1; svd "nuclear" with D ≤ k (rank ≤ k, so the ratio is
    1); svd "frobenius" with D = 1. Batch-dependent cases (N ≤ k, N = 1, N = 0) are not listed here;
    regularizer_terms warns about those when they happen.

    Args:
        cfg: the regulariser configuration.
        num_columns: D, the vocabulary size (NLG) or number of classes/outputs (NLU).

    Returns:
        Term names in ("consistency", "diversity", "svd") order.
    """
    if isinstance(num_columns, bool) or not isinstance(num_columns, int) or num_columns < 1:
        raise ValueError(f"num_columns must be an integer ≥ 1, got {num_columns!r}")
    reasons = _constant_reasons(cfg, num_columns)
    return [term for term in TERMS if term in reasons]


def _warn_once(term: str, reason_key: str, message: str) -> None:
    if (term, reason_key) in _WARNED:
        return
    _WARNED.add((term, reason_key))
    warnings.warn(f"BA-LoRA {term} regulariser is constant: {message}", ConstantTermWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# The terms
# ---------------------------------------------------------------------------------------------


def regularizer_terms(
    logits: torch.Tensor,
    ref_logits: torch.Tensor | None,
    mask: torch.Tensor | None,
    cfg: RegularizerConfig,
    terms: Iterable[str] = TERMS,
    hidden: torch.Tensor | None = None,
    head_factor: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Unweighted BA-LoRA regularisers of one micro-batch (method.md §3).

    Args:
        logits: student logits, (B, T, V) for NLG — already aligned with their targets, i.e. the
            caller passes logits[:, :-1] for labels[:, 1:] — or (B, C) for NLU. Any float dtype.
        ref_logits: logits of the frozen reference, same shape; detached here. None means "no
            consistency term": "consistency" is then a zero tensor.
        mask: (B, T) bool, True on valid rows (NLG: label ≠ −100 after the shift); None = all rows
            valid (the NLU case, where it may also be a (B,) bool).
        cfg: which form of each term to compute.
        terms: the terms to compute; the others are returned as zeros without any work (pass only
            the terms whose λ is non-zero).
        hidden: optional last hidden states H with logits = H Wᵀ (a frozen linear head W (D, H_dim)
            with no bias and nothing after it), shape logits.shape[:-1] + (H_dim,), rows aligned with
            ``logits``. With ``head_factor`` the SVD term is computed in hidden space
            (`svd_loss_hidden`): the same value and gradient (now with respect to ``hidden``), with an
            N × H_dim problem instead of N × N × D products. Both None (the default): logits space.
        head_factor: L = `head_gram_factor(W)`, (H_dim, r) float64 with L Lᵀ = Wᵀ W.

    Returns:
        {"consistency", "diversity", "svd"}: 0-d float32 tensors on logits' device, differentiable
        with respect to ``logits``. Edge cases, all finite with finite gradients:
            * N = 0 valid rows: every term is 0 (gradient 0).
            * covariance with N = 1: undefined (N−1 = 0 divisor), returned as 0; otherwise the
              unbiased N−1 divisor is used.
            * svd with k ≥ rank(Z): the top-k sum is the full sum (nuclear: exactly −1, no
              gradient). Singular values below the Gram matrix's float64 resolution
              (σ² ≤ σ_max² · max(N, D) · eps) count as 0 and get no gradient.
            * Z = 0: svd is 0.
        Terms that are constant for the configuration or the batch trigger one ConstantTermWarning
        per (term, reason) per process.
    """
    wanted = set(terms)
    unknown = wanted - set(TERMS)
    if unknown:
        raise ValueError(f"unknown regularizer terms {sorted(unknown)}; choose from {TERMS}")
    if not isinstance(cfg, RegularizerConfig):
        raise TypeError(f"cfg must be a RegularizerConfig, got {type(cfg).__name__}")
    x, ref, rows_b, rows_t = _prepare_inputs(logits, ref_logits, mask, cfg)
    n, d = rows_b.numel(), x.shape[-1]
    if (hidden is None) != (head_factor is None):
        raise ValueError("hidden and head_factor go together: pass both (hidden-space SVD term) or neither")
    if hidden is not None:
        hidden = _check_hidden(hidden, head_factor, logits)

    # A zero that is part of logits' graph: backward() works on it and gives a zero gradient.
    out = {term: x[..., :0].sum(dtype=torch.float32) for term in TERMS}
    if ref is None:
        wanted.discard("consistency")
    for term, reason in _constant_reasons(cfg, d).items():
        if term in wanted:
            _warn_once(term, reason, reason)
    if not wanted:
        return out
    if n == 0:
        _warn_once("all", "no valid rows", "the micro-batch has no valid rows; every term is 0")
        return out

    need_consistency = "consistency" in wanted
    need_entropy = "diversity" in wanted and cfg.diversity != "covariance"
    need_covariance = "diversity" in wanted and cfg.diversity == "covariance"
    need_svd = "svd" in wanted

    # Hot paths (KL, top-K and full-vocabulary entropy, which read all N×V logits) use fused autograd
    # functions with analytic gradients: no autograd graph per chunk. The KL and the top-K entropy share
    # one pass that also computes their gradients; the full entropy recomputes its softmax in the
    # backward (it keeps nothing N×V).
    fused_kl = need_consistency and cfg.consistency == "kl"
    fused_entropy = need_entropy and cfg.diversity == "entropy"
    fused_top_k = need_entropy and cfg.diversity == "topk_entropy"
    if fused_kl or fused_top_k:
        # One pass over the rows for the KL and the top-K entropy, gradients computed in that pass.
        kl_sum, entropy_sum = _KLTopKEntropy.apply(x, ref if fused_kl else None, rows_b, rows_t, cfg.temperature,
                                                   cfg.entropy_top_k if fused_top_k else None, cfg.chunk_size)
        if fused_kl:
            out["consistency"] = cfg.temperature**2 * kl_sum / n
        if fused_top_k:
            out["diversity"] = -entropy_sum / n  # −mean H: minimising the loss maximises entropy
    if fused_entropy:
        # −mean H: minimising the loss maximises entropy
        out["diversity"] = -_EntropyRowSum.apply(x, rows_b, rows_t, cfg.chunk_size) / n
    need_consistency = need_consistency and cfg.consistency != "kl"
    need_entropy = need_entropy and not fused_entropy and not fused_top_k
    if need_consistency or need_entropy:
        consistency_sum, entropy_sum = out["consistency"], out["diversity"]
        for start in range(0, n, cfg.chunk_size):
            sl = slice(start, start + cfg.chunk_size)
            c_sum, e_sum = _checkpointed(
                _row_chunk_sums, x, ref, rows_b[sl], rows_t[sl], cfg, need_consistency, need_entropy
            )
            consistency_sum, entropy_sum = consistency_sum + c_sum, entropy_sum + e_sum
        if need_consistency:
            out["consistency"] = consistency_sum / (n * d)  # mse_normalized: mean over all entries
        if need_entropy:
            out["diversity"] = -entropy_sum / n  # −mean H: minimising the loss maximises entropy

    if need_covariance and n == 1:
        _warn_once("diversity", "N = 1", "one valid row: the covariance is undefined (N−1 = 0); term = 0")
        need_covariance = False
    if need_svd and d > cfg.svd_top_k and cfg.svd_normalizer == "nuclear" and n <= cfg.svd_top_k:
        _warn_once("svd", "N ≤ k", f"N={n} valid rows ≤ k={cfg.svd_top_k}: rank ≤ k, term = -1")
    if need_svd and d > 1 and cfg.svd_normalizer == "frobenius" and n == 1:
        _warn_once("svd", "N = 1", "one valid row has one singular value: term = -1")

    if need_svd and hidden is not None:
        # Z Zᵀ = H (Wᵀ W) Hᵀ = (H L)(H L)ᵀ: the same spectrum from an N × H_dim matrix (exact).
        out["svd"] = _svd_term_hidden(hidden[rows_b, rows_t], head_factor, cfg, d).float()
        need_svd = False
    if need_svd and n <= d and not need_covariance:
        # The NLG case (N ≪ V): a fused Gram Z Zᵀ with an analytic backward, two N×N×V products in
        # all instead of three with checkpointed column blocks.
        out["svd"] = _svd_term(_RowGram.apply(x, rows_b, rows_t, cfg.chunk_size), cfg, n, d).float()
        need_svd = False
    if need_covariance or need_svd:
        gram, cov_frob_sq, cov_diag_sq = _gram_passes(
            x, rows_b, rows_t, cfg.chunk_size, need_svd, need_covariance
        )
        if need_covariance:
            # Σ_{a≠b} C_ab² = ‖C‖_F² − Σ_a C_aa², C = Zcᵀ Zc / (N−1).
            off_diag = (cov_frob_sq - cov_diag_sq) / (n - 1) ** 2
            out["diversity"] = (off_diag / d).float()
        if need_svd:
            out["svd"] = _svd_term(gram, cfg, n, d).float()
    return out


def _prepare_inputs(
    logits: torch.Tensor,
    ref_logits: torch.Tensor | None,
    mask: torch.Tensor | None,
    cfg: RegularizerConfig,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Validate shapes; return (B', T', D) views of logits / ref and the (b, t) indices of valid rows."""
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point tensor")
    expected_dim = 3 if cfg.task == "nlg" else 2
    layout = "(B, T, V)" if cfg.task == "nlg" else "(B, C)"
    if logits.dim() != expected_dim:
        raise ValueError(
            f"task={cfg.task!r} expects logits of shape {layout}, got {tuple(logits.shape)}; "
            "set RegularizerConfig.task to match the model"
        )
    if logits.shape[-1] < 1:
        raise ValueError("logits must have at least one column")
    if ref_logits is not None:
        if not torch.is_tensor(ref_logits) or not ref_logits.is_floating_point():
            raise TypeError("ref_logits must be a floating-point tensor or None")
        if ref_logits.shape != logits.shape:
            raise ValueError(
                f"ref_logits shape {tuple(ref_logits.shape)} != logits shape {tuple(logits.shape)}"
            )
        ref_logits = ref_logits.detach()
    # NLU is handled as one "sequence" of B rows: unsqueeze is a view, no copy.
    x = logits if expected_dim == 3 else logits.unsqueeze(0)  # (B', T', D)
    ref = None if ref_logits is None else (ref_logits if expected_dim == 3 else ref_logits.unsqueeze(0))
    if mask is None:
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    else:
        if not torch.is_tensor(mask) or mask.dtype != torch.bool:
            raise ValueError("mask must be a bool tensor (e.g. labels != -100) or None")
        if mask.shape != logits.shape[:-1]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != logits.shape[:-1] {tuple(logits.shape[:-1])}"
            )
        valid = (mask if expected_dim == 3 else mask.unsqueeze(0)).to(x.device)
    rows_b, rows_t = valid.nonzero(as_tuple=True)  # (N,), (N,)
    return x, ref, rows_b, rows_t


def _row_chunks(x: torch.Tensor, rows_b: torch.Tensor, rows_t: torch.Tensor, chunk_size: int):
    """Yields (start, stop, chunk) over the N valid rows of x (B', T', D), chunk (c, D) in x's dtype.

    When every row is valid (the trainer passes the gathered (1, N, V) rows) a chunk is a view of x,
    not a gathered copy.
    """
    n = rows_b.numel()
    flat = x.reshape(-1, x.shape[-1]) if n == x.shape[0] * x.shape[1] else None  # (N, D) view or None
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        yield start, stop, (flat[start:stop] if flat is not None else x[rows_b[start:stop], rows_t[start:stop]])


class _KLTopKEntropy(torch.autograd.Function):
    """Row sums of the two softmax terms of the ICLR-2026 NLG form in one pass over the N valid rows:

        kl      = Σ_rows KL(softmax(Z_ref/T) ‖ softmax(Z/T))          (ref given)
        entropy = Σ_rows H(softmax(top-K of z))                        (top_k given)

    Each chunk of rows is upcast to fp32 once; both softmaxes, the KL, the top-K and the entropy are
    computed from it, and so are the gradients, which the backward only scales (no softmax is
    recomputed): d kl/dz = (p − p_ref)/T is kept as an N × D tensor in the logits' dtype (the size of
    the gradient the backward returns anyway), d entropy/dz = −q (log q + H) as N × K values at the
    top-K indices. A second backward through the same graph is refused (the kept gradient is scaled in
    place by the first).
    """

    @staticmethod
    def forward(ctx, x, ref, rows_b, rows_t, temperature, top_k, chunk_size):
        n, d = rows_b.numel(), x.shape[-1]
        need_grad = ctx.needs_input_grad[0]
        kl = torch.zeros((), dtype=torch.float32, device=x.device)
        entropy = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_kl = torch.empty((n, d), dtype=x.dtype, device=x.device) if need_grad and ref is not None else None
        top_index = top_grad = None
        if top_k is not None:
            k = min(top_k, d)
            top_index = torch.empty((n, k), dtype=torch.long, device=x.device)
            top_grad = torch.empty((n, k), dtype=torch.float32, device=x.device) if need_grad else None
        ref_chunks = _row_chunks(ref, rows_b, rows_t, chunk_size) if ref is not None else None
        for start, stop, chunk in _row_chunks(x, rows_b, rows_t, chunk_size):
            z = chunk.float()  # (c, D); a view when the logits are fp32
            if top_k is not None:
                values, index = z.topk(k, dim=-1)  # (c, K)
                log_q = F.log_softmax(values, dim=-1).clamp_min_(_LOGP_FLOOR)
                q = log_q.exp()
                row_entropy = -(q * log_q).sum(dim=-1, keepdim=True)  # (c, 1)
                entropy += row_entropy.sum()
                top_index[start:stop] = index
                if need_grad:
                    top_grad[start:stop] = -q * (log_q + row_entropy)  # dH/dz on the top-K entries
            if ref is not None:
                log_p = F.log_softmax(z / temperature, dim=-1).clamp_min_(_LOGP_FLOOR)  # (c, D)
                log_p_ref = F.log_softmax(next(ref_chunks)[2].float() / temperature, dim=-1).clamp_min_(_LOGP_FLOOR)
                p_ref = log_p_ref.exp()
                kl += torch.sub(log_p_ref, log_p, out=log_p_ref).mul_(p_ref).sum()  # Σ p_ref (log p_ref − log p)
                if need_grad:
                    torch.sub(log_p.exp_(), p_ref, out=grad_kl[start:stop])  # (p − p_ref), ·1/T in backward
        ctx.save_for_backward(rows_b, rows_t, top_index)
        ctx.grad_kl, ctx.top_grad = grad_kl, top_grad
        ctx.temperature, ctx.x_shape, ctx.x_dtype = temperature, x.shape, x.dtype
        return kl, entropy

    @staticmethod
    def backward(ctx, grad_kl_total, grad_entropy_total):
        rows_b, rows_t, top_index = ctx.saved_tensors
        if ctx.grad_kl is None and ctx.top_grad is None:
            raise RuntimeError("the fused KL/top-K entropy gradient was already used: backward through these "
                               "BA-LoRA terms runs once (recompute the terms to differentiate again)")
        n, d = rows_b.numel(), ctx.x_shape[-1]
        grad = ctx.grad_kl  # (N, D), x's dtype
        if grad is not None:
            grad.mul_(grad_kl_total / ctx.temperature)
        else:
            grad = torch.zeros((n, d), dtype=ctx.x_dtype, device=rows_b.device)
        if ctx.top_grad is not None:
            grad.scatter_add_(1, top_index, (ctx.top_grad * grad_entropy_total).to(grad.dtype))
        ctx.grad_kl = ctx.top_grad = None
        if n == ctx.x_shape[0] * ctx.x_shape[1]:
            return grad.view(ctx.x_shape), None, None, None, None, None, None
        full = torch.zeros(ctx.x_shape, dtype=ctx.x_dtype, device=grad.device)
        full[rows_b, rows_t] = grad
        return full, None, None, None, None, None, None


class _EntropyRowSum(torch.autograd.Function):
    """Σ over valid rows of H(softmax(z)), fp32, chunked; analytic backward dH/dz = −p (log p + H)."""

    @staticmethod
    def forward(ctx, x, rows_b, rows_t, chunk_size):
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for start in range(0, rows_b.numel(), chunk_size):
            rb, rt = rows_b[start:start + chunk_size], rows_t[start:start + chunk_size]
            log_p = F.log_softmax(x[rb, rt].float(), dim=-1).clamp_min_(_LOGP_FLOOR)  # (c, D)
            total -= (log_p.exp() * log_p).sum()
        ctx.save_for_backward(x, rows_b, rows_t)
        ctx.chunk_size = chunk_size
        return total

    @staticmethod
    def backward(ctx, grad_total):
        x, rows_b, rows_t = ctx.saved_tensors
        grad_x = torch.zeros_like(x)
        for start in range(0, rows_b.numel(), ctx.chunk_size):
            rb, rt = rows_b[start:start + ctx.chunk_size], rows_t[start:start + ctx.chunk_size]
            log_p = F.log_softmax(x[rb, rt].float(), dim=-1).clamp_min_(_LOGP_FLOOR)  # (c, D)
            p = log_p.exp()
            entropy = -(p * log_p).sum(dim=-1, keepdim=True)  # (c, 1)
            grad_x[rb, rt] = (-p * (log_p + entropy) * grad_total).to(x.dtype)
        return grad_x, None, None, None


class _RowGram(torch.autograd.Function):
    """G = Z Zᵀ (N×N, float64) of the valid rows, accumulated over column blocks; backward (Ḡ+Ḡᵀ) Z.

    Column blocks hold about chunk_size·D/2 float64 entries (the bytes of one fp32 row chunk), so the
    memory bound is that of the row-chunked terms; nothing N×D is saved for the backward.
    """

    @staticmethod
    def forward(ctx, x, rows_b, rows_t, chunk_size):
        n, d = rows_b.numel(), x.shape[-1]
        cols = max(1, chunk_size * d // (2 * n))
        gram = torch.zeros((n, n), dtype=torch.float64, device=x.device)
        for start in range(0, d, cols):
            z = x[:, :, start:start + cols][rows_b, rows_t].double()  # (N, cols)
            gram.addmm_(z, z.T)
        ctx.save_for_backward(x, rows_b, rows_t)
        ctx.cols = cols
        return gram

    @staticmethod
    def backward(ctx, grad_gram):
        x, rows_b, rows_t = ctx.saved_tensors
        grad_x = torch.zeros_like(x)
        symmetric = grad_gram + grad_gram.T  # (N, N)
        for start in range(0, x.shape[-1], ctx.cols):
            stop = start + ctx.cols
            z = x[:, :, start:stop][rows_b, rows_t].double()  # (N, cols)
            grad_x[rows_b, rows_t, start:stop] = (symmetric @ z).to(x.dtype)
        return grad_x, None, None, None


def _checkpointed(fn: Callable, x: torch.Tensor, *args):
    """fn(x, *args), recomputed in the backward instead of keeping its upcast intermediates."""
    if torch.is_grad_enabled() and x.requires_grad:
        return checkpoint(fn, x, *args, use_reentrant=False, preserve_rng_state=False)
    return fn(x, *args)


def _row_chunk_sums(
    x: torch.Tensor,
    ref: torch.Tensor | None,
    rows_b: torch.Tensor,
    rows_t: torch.Tensor,
    cfg: RegularizerConfig,
    need_consistency: bool,
    need_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over one chunk of c rows of the consistency and entropy per-row quantities (fp32)."""
    z = x[rows_b, rows_t].float()  # (c, D)
    consistency = z.new_zeros(())
    entropy = z.new_zeros(())
    if need_consistency:
        z_ref = ref[rows_b, rows_t].float()  # (c, D)
        if cfg.consistency == "kl":
            # KL(P_ref ‖ P) = Σ_v p_ref (log p_ref − log p), both at temperature T.
            log_p = F.log_softmax(z / cfg.temperature, dim=-1).clamp_min(_LOGP_FLOOR)
            log_p_ref = F.log_softmax(z_ref / cfg.temperature, dim=-1).clamp_min(_LOGP_FLOOR)
            consistency = (log_p_ref.exp() * (log_p_ref - log_p)).sum()
        else:
            diff = F.normalize(z, dim=-1, eps=_NORM_EPS) - F.normalize(z_ref, dim=-1, eps=_NORM_EPS)
            consistency = diff.square().sum()
    if need_entropy:
        if cfg.diversity == "topk_entropy":
            z = z.topk(min(cfg.entropy_top_k, z.shape[-1]), dim=-1).values  # (c, K)
        log_p = F.log_softmax(z, dim=-1).clamp_min(_LOGP_FLOOR)
        entropy = -(log_p.exp() * log_p).sum()
    return consistency, entropy


def _gram_passes(
    x: torch.Tensor,
    rows_b: torch.Tensor,
    rows_t: torch.Tensor,
    chunk_size: int,
    need_svd: bool,
    need_covariance: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Float64 Gram matrix of Z and the two sums the covariance term needs.

    Uses the smaller Gram: Z Zᵀ (N×N) when N ≤ D, accumulated over column blocks (each block holds
    all N rows, so the column means for centring are exact inside the block); Zᵀ Z (D×D) when
    N > D, accumulated over row chunks. Blocks hold about chunk_size·D/2 float64 entries, the bytes
    of one fp32 row chunk.

    Returns:
        gram: Z Zᵀ or Zᵀ Z (float64), or None when not needed.
        cov_frob_sq: ‖Zcᵀ Zc‖_F² (= ‖Zc Zcᵀ‖_F²), or None.
        cov_diag_sq: Σ_a (Zcᵀ Zc)_aa², or None.
    """
    n, d = rows_b.numel(), x.shape[-1]
    gram = cov_frob_sq = cov_diag_sq = None
    if n <= d:
        cols = max(1, chunk_size * d // (2 * n))
        cov_gram = None
        for start in range(0, d, cols):
            g, cg, dsq = _checkpointed(
                _column_block, x, rows_b, rows_t, start, start + cols, need_svd, need_covariance
            )
            if need_svd:
                gram = g if gram is None else gram + g
            if need_covariance:
                cov_gram = cg if cov_gram is None else cov_gram + cg
                cov_diag_sq = dsq if cov_diag_sq is None else cov_diag_sq + dsq
        if need_covariance:
            cov_frob_sq = cov_gram.square().sum()
        return gram, cov_frob_sq, cov_diag_sq

    mean = None
    if need_covariance:
        # Column means, accumulated chunk by chunk (nothing large is kept for the backward).
        total = None
        for start in range(0, n, chunk_size):
            sl = slice(start, start + chunk_size)
            s = x[rows_b[sl], rows_t[sl]].double().sum(0)  # (D,)
            total = s if total is None else total + s
        mean = total / n
    cov = None
    for start in range(0, n, chunk_size):
        sl = slice(start, start + chunk_size)
        g, c = _checkpointed(_row_block, x, rows_b[sl], rows_t[sl], mean, need_svd, need_covariance)
        if need_svd:
            gram = g if gram is None else gram + g
        if need_covariance:
            cov = c if cov is None else cov + c
    if need_covariance:
        cov_frob_sq = cov.square().sum()
        cov_diag_sq = cov.diagonal().square().sum()
    return gram, cov_frob_sq, cov_diag_sq


def _column_block(
    x: torch.Tensor,
    rows_b: torch.Tensor,
    rows_t: torch.Tensor,
    start: int,
    stop: int,
    need_svd: bool,
    need_covariance: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contributions of columns [start, stop) to Z Zᵀ, Zc Zcᵀ and Σ_a (Zcᵀ Zc)_aa² (float64)."""
    z = x[:, :, start:stop][rows_b, rows_t].double()  # (N, cols)
    empty = z.new_zeros(())
    gram = z @ z.T if need_svd else empty  # (N, N)
    if not need_covariance:
        return gram, empty, empty
    zc = z - z.mean(dim=0, keepdim=True)  # (N, cols), centred over rows
    return gram, zc @ zc.T, zc.square().sum(dim=0).square().sum()


def _row_block(
    x: torch.Tensor,
    rows_b: torch.Tensor,
    rows_t: torch.Tensor,
    mean: torch.Tensor | None,
    need_svd: bool,
    need_covariance: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contributions of one row chunk to Zᵀ Z and Zcᵀ Zc (float64, D×D)."""
    z = x[rows_b, rows_t].double()  # (c, D)
    empty = z.new_zeros(())
    gram = z.T @ z if need_svd else empty  # (D, D)
    if not need_covariance:
        return gram, empty
    zc = z - mean  # (c, D)
    return gram, zc.T @ zc


class _TopEigenvalues(torch.autograd.Function):
    """The k largest eigenvalues of a symmetric PSD matrix G (N×N, float64), descending, by LOBPCG.

    Forward returns the Rayleigh quotients v_iᵀ G v_i of the converged eigenvectors; backward is
    dλ_i/dG = v_i v_iᵀ, the exact gradient of a simple eigenvalue (the same one eigh's gives). The
    start block comes from a fixed-seed generator, so the global RNG (dropout, sampling) is untouched.
    Pairs whose residual ‖G v − λ v‖ exceeds 1e-6·λ_max fall back to the full eigh.
    """

    @staticmethod
    def forward(ctx, gram, k):
        with torch.no_grad():
            start = torch.randn(gram.shape[0], k, dtype=gram.dtype,
                                generator=torch.Generator().manual_seed(0)).to(gram.device)
            _, vectors = torch.lobpcg(gram, X=start, largest=True)  # (N, k)
            values = ((gram @ vectors) * vectors).sum(dim=0)  # (k,) Rayleigh quotients
            order = values.argsort(descending=True)
            values, vectors = values[order], vectors[:, order]
            residual = (gram @ vectors - vectors * values).norm(dim=0).max()
            if not bool(residual <= 1e-6 * values[0].abs().clamp_min(torch.finfo(gram.dtype).tiny)):
                if ("svd", "lobpcg fallback") not in _WARNED:
                    _WARNED.add(("svd", "lobpcg fallback"))
                    warnings.warn(f"BA-LoRA svd regulariser: LOBPCG did not converge (residual {float(residual):.2e}"
                                  f" > 1e-6·λ_max); the full eigh was used (said once per process)", RuntimeWarning,
                                  stacklevel=2)
                all_values, all_vectors = torch.linalg.eigh(gram)
                values, vectors = all_values.flip(-1)[:k], all_vectors.flip(-1)[:, :k]
        ctx.save_for_backward(vectors)
        return values

    @staticmethod
    def backward(ctx, grad_values):
        (vectors,) = ctx.saved_tensors  # (N, k)
        return (vectors * grad_values) @ vectors.T, None


def _svd_term(gram: torch.Tensor, cfg: RegularizerConfig, n: int, d: int) -> torch.Tensor:
    """−Σ_{i≤k} σ_i / (Σ σ or ‖Z‖_F) from the float64 Gram matrix (its eigenvalues are σ²)."""
    if cfg.svd_eigensolver == "lobpcg" and n >= 3 * cfg.svd_top_k and d > cfg.svd_top_k:
        # Only the top-k σ² and trace(G) = ‖Z‖_F² enter the frobenius form: no full spectrum needed.
        eig = _TopEigenvalues.apply(gram, cfg.svd_top_k)  # (k,) σ², descending
    else:
        eig = torch.linalg.eigvalsh(gram).flip(-1)  # (min(N, D),) σ², descending
    # σ² below the Gram's float64 resolution is numerically zero: take sqrt only above it, so no
    # 1/(2·sqrt(0)) = inf enters the gradient.
    tol = eig[0].detach().clamp_min(0) * max(n, d) * torch.finfo(torch.float64).eps
    positive = eig > tol
    sigma = torch.where(
        positive, torch.where(positive, eig, torch.ones_like(eig)).sqrt(), torch.zeros_like(eig)
    )
    top = sigma[: cfg.svd_top_k].sum()
    if cfg.svd_normalizer == "nuclear":
        denominator = sigma.sum()
    else:
        # ‖Z‖_F² = trace(Gram): exact, and no clamped eigenvalues involved.
        trace = gram.diagonal().sum()
        denominator = torch.where(
            trace > 0, torch.where(trace > 0, trace, torch.ones_like(trace)).sqrt(), trace * 0
        )
    nonzero = denominator > 0
    # Z = 0 has no spectrum: the term is 0 there (safe denominator keeps the gradient finite).
    return torch.where(
        nonzero, -top / torch.where(nonzero, denominator, torch.ones_like(denominator)), top * 0
    )


# ---------------------------------------------------------------------------------------------
# The SVD term in hidden space (exact): logits Z = H Wᵀ of a frozen linear head W (D × H_dim)
# ---------------------------------------------------------------------------------------------

# Rows of W upcast to float64 at once while forming Wᵀ W (bounds the memory at a 256k vocabulary).
_HEAD_ROWS_PER_BLOCK = 8192


def head_gram_factor(weight: torch.Tensor) -> torch.Tensor:
    """L (H_dim × H_dim, float64) with L Lᵀ = Wᵀ W, for the logits Z = H Wᵀ of a linear head W.

    Z Zᵀ = H Wᵀ W Hᵀ = (H L)(H L)ᵀ, so the singular values of Z (N × D) are exactly those of
    H L (N × H_dim), and ‖Z‖_F = ‖H L‖_F. L = Q Λ^{1/2} from the eigendecomposition Wᵀ W = Q Λ Qᵀ
    (float64; eigenvalues that rounding makes negative are clamped to 0), which also covers a head
    of rank < H_dim. Compute it once per run while the head is frozen; no gradient flows to W.

    Args:
        weight: W, (D, H_dim), any float dtype and device (the `nn.Linear(H_dim, D).weight`).

    Returns:
        (H_dim, H_dim) float64 tensor on weight's device.
    """
    if not torch.is_tensor(weight) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError("weight must be a 2-D floating-point tensor (D, H_dim), the head's nn.Linear weight")
    w = weight.detach()
    gram = torch.zeros((w.shape[1], w.shape[1]), dtype=torch.float64, device=w.device)
    for start in range(0, w.shape[0], _HEAD_ROWS_PER_BLOCK):
        block = w[start:start + _HEAD_ROWS_PER_BLOCK].double()  # (rows, H_dim)
        gram.addmm_(block.T, block)
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    return eigenvectors * eigenvalues.clamp_min(0).sqrt()  # (H_dim, H_dim): Q Λ^{1/2}


def svd_loss_hidden(
    hidden: torch.Tensor, head_factor: torch.Tensor, cfg: RegularizerConfig, num_columns: int
) -> torch.Tensor:
    """The SVD term of method.md §3 for the logits Z = H Wᵀ, computed from H (exact).

        L_svd = −Σ_{i≤k} σ_i(Z) / (Σ_j σ_j(Z)  or  ‖Z‖_F),   σ(Z) = σ(H L),  L Lᵀ = Wᵀ W

    Equal in value and gradient (through H) to `regularizer_terms(H Wᵀ, ...)["svd"]`, at the cost of
    an N × H_dim product and a min(N, H_dim)² float64 eigenproblem instead of N × N × D products and
    an N × N one.

    Args:
        hidden: (N, H_dim) hidden states of the N valid rows (the LM head's input), any float dtype.
        head_factor: `head_gram_factor(W)`, (H_dim, r) float64.
        cfg: the regulariser configuration (svd_top_k, svd_normalizer, svd_eigensolver).
        num_columns: D, the head's output size (the zero-eigenvalue tolerance is that of the logits
            path, which sees an N × D matrix).

    Returns:
        0-d float32 tensor, differentiable with respect to ``hidden``; 0 for N = 0 or Z = 0.
    """
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be (N, H_dim), got shape {tuple(hidden.shape)}")
    _check_factor(head_factor, hidden.shape[-1])
    if hidden.shape[0] == 0:
        return hidden.sum(dtype=torch.float32) * 0
    return _svd_term_hidden(hidden, head_factor, cfg, num_columns).float()


def _check_factor(head_factor: torch.Tensor, hidden_dim: int) -> None:
    if not torch.is_tensor(head_factor) or head_factor.dim() != 2 or head_factor.shape[0] != hidden_dim:
        shape = tuple(head_factor.shape) if torch.is_tensor(head_factor) else type(head_factor).__name__
        raise ValueError(f"head_factor must be ({hidden_dim}, r) from head_gram_factor(W), got {shape}")


def _check_hidden(hidden: torch.Tensor, head_factor: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Validate the hidden-space input; return it as a (B', T', H_dim) view matching _prepare_inputs."""
    if not torch.is_tensor(hidden) or not hidden.is_floating_point():
        raise TypeError("hidden must be a floating-point tensor")
    if hidden.shape[:-1] != logits.shape[:-1]:
        raise ValueError(f"hidden shape {tuple(hidden.shape)} must be logits.shape[:-1] + (H_dim,) = "
                         f"{tuple(logits.shape[:-1])} + (H_dim,)")
    _check_factor(head_factor, hidden.shape[-1])
    return hidden if logits.dim() == 3 else hidden.unsqueeze(0)


def _svd_term_hidden(hidden: torch.Tensor, head_factor: torch.Tensor, cfg: RegularizerConfig,
                     num_columns: int) -> torch.Tensor:
    """_svd_term of the Gram of Y = H L (N × r): Y Yᵀ = Z Zᵀ when N ≤ r, else Yᵀ Y (same nonzero σ²)."""
    y = hidden.double() @ head_factor.to(hidden.device)  # (N, r)
    n, r = y.shape
    gram = y @ y.T if n <= r else y.T @ y  # (min(N, r),)²
    if cfg.svd_eigensolver == "lobpcg" and gram.shape[0] < 3 * cfg.svd_top_k:
        cfg = dataclasses.replace(cfg, svd_eigensolver="eigh")  # LOBPCG needs a matrix of size ≥ 3k
    return _svd_term(gram, cfg, n, num_columns)
