"""The three BA-LoRA logit regularisers as pure tensor functions (docs/method.md §3).

    L = L_task + λ1·L_consistency + λ2·L_diversity + λ3·L_svd

`consistency_loss`, `diversity_loss` and `svd_loss` compute one *unweighted* term each from the
student's logits (and, for consistency, the frozen reference's) on the rows already selected;
`regularizer_terms` computes the three at once from a (B, T, V) or (B, C) batch and a mask, sharing one
pass over the logits where it can. The caller (the trainer) owns the λ weights and their schedule.

Dimensions, named once:
    B  batch size
    T  sequence positions (NLG), already shifted by the caller so that logits[:, t] predicts the
       target at t
    V  vocabulary size (NLG columns)
    C  number of classes (NLU columns; 1 for STS-B regression)
    D  number of columns: V for NLG, C for NLU
    N  number of valid rows of the micro-batch: response-token positions (NLG) or examples (NLU)

Z ∈ R^{N×D} is the matrix of the student's logits on the valid rows, Z_ref the reference's, z_i a row.
Every mean is over the N valid rows; masked rows are never read (their values, even inf/NaN garbage,
change neither the terms nor their gradients, and their gradient is exactly zero).

Inputs may be bf16/fp16; the softmax family is computed in fp32 and Gram matrices in float64, a chunk
of ``cfg.chunk_size`` rows at a time, so a 256k vocabulary costs about chunk_size × V × 4 bytes of
extra memory (the kernels and their memory behaviour: balora/_kernels.py). Gradients flow to the
student's logits only (and to ``hidden`` for the hidden-space SVD term); reference logits are detached.

The SVD term in hidden space: when Z = H Wᵀ with a frozen linear head W (no bias, nothing after it),
Z Zᵀ = H (Wᵀ W) Hᵀ, so with L Lᵀ = Wᵀ W (`head_gram_factor`, once per run) the singular values of Z
are exactly those of H L (N × H_dim) and ‖Z‖_F = ‖H L‖_F. `svd_loss_hidden` (or `regularizer_terms`
with ``hidden`` and ``head_factor``) then needs an N × H_dim product and a min(N, H_dim)² eigenproblem
instead of the N × N × V Gram products and an N × N one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from balora import _kernels

TERMS = ("consistency", "diversity", "svd")
TASKS = ("nlg", "nlu")
CONSISTENCY_TYPES = ("kl", "mse_normalized")
DIVERSITY_TYPES = ("topk_entropy", "entropy", "covariance")
SVD_NORMALIZERS = ("frobenius", "nuclear")
SVD_EIGENSOLVERS = ("eigh", "lobpcg")


class ConstantTermWarning(UserWarning):
    """A regulariser is identically constant (zero gradient) for this configuration or batch."""


@dataclass(frozen=True)
class RegularizerConfig:
    """Which form of each regulariser to compute (docs/method.md §3); the λ weights live elsewhere.

    Args:
        task: the layout `regularizer_terms` expects: "nlg" (logits (B, T, V) with a (B, T) mask) or
            "nlu" (logits (B, C)). The per-term functions take the selected (N, D) rows for either.
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
            back to eigh when it is not small; below min(N, D) = 3k lobpcg does not apply and eigh is used.
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
            raise ValueError(
                "svd_eigensolver 'lobpcg' computes only the top-k σ, so it needs "
                f"svd_normalizer 'frobenius' (the nuclear norm needs every σ), got {self.svd_normalizer!r}"
            )
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
# The three terms, one function each, on the N selected rows
# ---------------------------------------------------------------------------------------------


def consistency_loss(
    student_logits: torch.Tensor, reference_logits: torch.Tensor, cfg: RegularizerConfig
) -> torch.Tensor:
    """Consistency with the frozen pre-trained model (docs/method.md §3), cfg.consistency selects:

        "kl":              L = T² · (1/N) Σ_i KL(softmax(z_ref_i / T) ‖ softmax(z_i / T))
        "mse_normalized":  L = 1/(N·D) Σ_i ‖ z_i/‖z_i‖₂ − z_ref_i/‖z_ref_i‖₂ ‖²

    with T = cfg.temperature. Zero when the student equals the reference.

    Args:
        student_logits: Z, (N, D) student logits of the selected rows (NLG: response-token positions
            after the shift, e.g. logits[:, :-1][labels[:, 1:] != -100], D = V; NLU: (B, C)). Any
            float dtype.
        reference_logits: Z_ref, (N, D) logits of the frozen reference on the same rows; detached.
        cfg: the regulariser configuration (consistency, temperature, chunk_size).

    Returns:
        0-d float32 tensor, differentiable with respect to ``student_logits``; 0 for N = 0.
    """
    x, ref, rows = _selected_rows(cfg, student_logits, reference_logits, with_ref=True)
    n, d = student_logits.shape
    _warn_constant(cfg, {"consistency"}, n, d)
    return _consistency(x, ref, rows, cfg) if n else _zero(x)


def diversity_loss(student_logits: torch.Tensor, cfg: RegularizerConfig) -> torch.Tensor:
    """Diversity of the student's outputs (docs/method.md §3), cfg.diversity selects:

        "topk_entropy":  L = −(1/N) Σ_i H(softmax(top-K of z_i)),   H(p) = −Σ_v p_v log p_v
        "entropy":       L = −(1/N) Σ_i H(softmax(z_i))
        "covariance":    L = (1/D) Σ_{a≠b} C_ab²,   C = Zcᵀ Zc / (N−1),   Zc = Z − mean_rows Z

    with K = cfg.entropy_top_k (K ≥ D means the full row). The entropy forms are −mean H, so minimising
    the loss raises the entropy; the covariance form decorrelates the output dimensions.

    Args:
        student_logits: Z, (N, D) student logits of the selected rows, any float dtype.
        cfg: the regulariser configuration (diversity, entropy_top_k, chunk_size).

    Returns:
        0-d float32 tensor, differentiable with respect to ``student_logits``; 0 for N = 0, and for the
        covariance with N = 1 (undefined: N−1 = 0).
    """
    x, _, rows = _selected_rows(cfg, student_logits)
    n, d = student_logits.shape
    _warn_constant(cfg, {"diversity"}, n, d)
    return _diversity(x, rows, cfg) if n else _zero(x)


def svd_loss(student_logits: torch.Tensor, cfg: RegularizerConfig) -> torch.Tensor:
    """Concentration of the spectrum of the student's logits (docs/method.md §3):

        L = −Σ_{i≤k} σ_i / Σ_j σ_j      (cfg.svd_normalizer "nuclear"; L ∈ [−1, 0])
        L = −Σ_{i≤k} σ_i / ‖Z‖_F        ("frobenius", ‖Z‖_F = sqrt(Σ_j σ_j²); L ∈ [−√k, 0])

    with σ_1 ≥ σ_2 ≥ … all singular values of Z (exact: the eigenvalues of the float64 Gram matrix,
    Z Zᵀ for N ≤ D, Zᵀ Z otherwise) and k = cfg.svd_top_k. Singular values below the Gram's float64
    resolution (σ² ≤ σ_max² · max(N, D) · eps) count as 0 and get no gradient; with k ≥ rank(Z) the
    nuclear form is exactly −1.

    Args:
        student_logits: Z, (N, D) student logits of the selected rows, any float dtype.
        cfg: the regulariser configuration (svd_top_k, svd_normalizer, svd_eigensolver, chunk_size).

    Returns:
        0-d float32 tensor, differentiable with respect to ``student_logits``; 0 for N = 0 or Z = 0.
    """
    x, _, rows = _selected_rows(cfg, student_logits)
    n, d = student_logits.shape
    _warn_constant(cfg, {"svd"}, n, d)
    return _svd(x, rows, cfg) if n else _zero(x)


# ---------------------------------------------------------------------------------------------
# The combined call: a (B, T, V) or (B, C) batch with a mask
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
    """Unweighted BA-LoRA regularisers of one micro-batch (docs/method.md §3).

    Each value equals `consistency_loss` / `diversity_loss` / `svd_loss` on the valid rows. When both
    the KL consistency and the top-K entropy are asked for (the ICLR-2026 NLG form), they come from one
    fused pass over the logits.

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
    x, ref, rows = _prepare_inputs(logits, ref_logits, mask, cfg)
    n, d = rows[0].numel(), x.shape[-1]
    if (hidden is None) != (head_factor is None):
        raise ValueError("hidden and head_factor go together: pass both (hidden-space SVD term) or neither")
    if hidden is not None:
        hidden = _check_hidden(hidden, head_factor, logits)
    if ref is None:
        wanted.discard("consistency")
    _warn_constant(cfg, wanted, n, d)

    out = {term: _zero(x) for term in TERMS}
    if n == 0:
        return out
    if {"consistency", "diversity"} <= wanted and (cfg.consistency, cfg.diversity) == ("kl", "topk_entropy"):
        # Both softmax terms from one pass over the N × V logits: no softmax is computed twice.
        kl_sum, entropy_sum = _kernels.KLTopKEntropy.apply(
            x, ref, *rows, cfg.temperature, cfg.entropy_top_k, cfg.chunk_size
        )
        out["consistency"], out["diversity"] = _kl_term(kl_sum, n, cfg), _entropy_term(entropy_sum, n)
        wanted -= {"consistency", "diversity"}
    if "consistency" in wanted:
        out["consistency"] = _consistency(x, ref, rows, cfg)
    if "diversity" in wanted:
        out["diversity"] = _diversity(x, rows, cfg)
    if "svd" in wanted:
        if hidden is not None:  # Z Zᵀ = (H L)(H L)ᵀ: the same spectrum from an N × H_dim matrix (exact)
            out["svd"] = _svd_hidden(hidden[rows], head_factor, cfg, d)
        else:
            out["svd"] = _svd(x, rows, cfg)
    return out


# ---------------------------------------------------------------------------------------------
# The SVD term in hidden space (exact): logits Z = H Wᵀ of a frozen linear head W (D × H_dim)
# ---------------------------------------------------------------------------------------------


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
    eigenvalues, eigenvectors = torch.linalg.eigh(_kernels.head_gram(weight.detach()))
    return eigenvectors * eigenvalues.clamp_min(0).sqrt()  # (H_dim, H_dim): Q Λ^{1/2}


def svd_loss_hidden(
    hidden: torch.Tensor, head_factor: torch.Tensor, cfg: RegularizerConfig, num_columns: int
) -> torch.Tensor:
    """The SVD term of docs/method.md §3 for the logits Z = H Wᵀ, computed from H (exact).

        L_svd = −Σ_{i≤k} σ_i(Z) / (Σ_j σ_j(Z)  or  ‖Z‖_F),   σ(Z) = σ(H L),  L Lᵀ = Wᵀ W

    Equal in value and gradient (through H) to `svd_loss(H Wᵀ, cfg)`, at the cost of an N × H_dim
    product and a min(N, H_dim)² float64 eigenproblem instead of N × N × D products and an N × N one.

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
    return _svd_hidden(hidden, head_factor, cfg, num_columns)


# ---------------------------------------------------------------------------------------------
# Presets: docs/method.md §3 "Hyperparameters reported", as data. λ keys match regularizer_terms' keys.
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
        # docs/method.md's table gives no consistency form or temperature for ICLR-2026 NLU: this preset
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
    """Look up a named recipe of docs/method.md §3.

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


def _warn_once(term: str, reason_key: str, message: str, stacklevel: int = 4) -> None:
    if (term, reason_key) in _WARNED:
        return
    _WARNED.add((term, reason_key))
    warnings.warn(
        f"BA-LoRA {term} regulariser is constant: {message}", ConstantTermWarning, stacklevel=stacklevel
    )


def _warn_constant(cfg: RegularizerConfig, wanted: set[str], n: int, d: int) -> None:
    """Warn (once per term and reason) about the wanted terms that are constant for this cfg and batch."""
    for term, reason in _constant_reasons(cfg, d).items():
        if term in wanted:
            _warn_once(term, reason, reason)
    if not wanted:
        return
    if n == 0:
        _warn_once("all", "no valid rows", "the micro-batch has no valid rows; every term is 0")
        return
    if "diversity" in wanted and cfg.diversity == "covariance" and n == 1:
        _warn_once("diversity", "N = 1", "one valid row: the covariance is undefined (N−1 = 0); term = 0")
    if "svd" in wanted and d > cfg.svd_top_k and cfg.svd_normalizer == "nuclear" and n <= cfg.svd_top_k:
        _warn_once("svd", "N ≤ k", f"N={n} valid rows ≤ k={cfg.svd_top_k}: rank ≤ k, term = -1")
    if "svd" in wanted and d > 1 and cfg.svd_normalizer == "frobenius" and n == 1:
        _warn_once("svd", "N = 1", "one valid row has one singular value: term = -1")


def _warn_lobpcg_fallback(residual: float) -> None:
    if ("svd", "lobpcg fallback") not in _WARNED:
        _WARNED.add(("svd", "lobpcg fallback"))
        warnings.warn(
            f"BA-LoRA svd regulariser: LOBPCG did not converge (residual {residual:.2e} > 1e-6·λ_max); "
            "the full eigh was used (said once per process)",
            RuntimeWarning,
            stacklevel=2,
        )


# ---------------------------------------------------------------------------------------------
# Each term on the valid rows of x (B', T', D), rows = (rows_b, rows_t), N ≥ 1
# ---------------------------------------------------------------------------------------------

_Rows = tuple[torch.Tensor, torch.Tensor]


def _zero(x: torch.Tensor) -> torch.Tensor:
    """A float32 zero that is part of x's graph: backward() works on it and gives a zero gradient."""
    return x[..., :0].sum(dtype=torch.float32)


def _kl_term(kl_sum: torch.Tensor, n: int, cfg: RegularizerConfig) -> torch.Tensor:
    return cfg.temperature**2 * kl_sum / n


def _entropy_term(entropy_sum: torch.Tensor, n: int) -> torch.Tensor:
    return -entropy_sum / n  # −mean H: minimising the loss maximises entropy


def _consistency(x: torch.Tensor, ref: torch.Tensor, rows: _Rows, cfg: RegularizerConfig) -> torch.Tensor:
    n, d = rows[0].numel(), x.shape[-1]
    if cfg.consistency == "kl":
        kl_sum, _ = _kernels.KLTopKEntropy.apply(x, ref, *rows, cfg.temperature, None, cfg.chunk_size)
        return _kl_term(kl_sum, n, cfg)
    return _kernels.normalized_mse_sum(x, ref, *rows, cfg.chunk_size) / (n * d)  # mean over all entries


def _diversity(x: torch.Tensor, rows: _Rows, cfg: RegularizerConfig) -> torch.Tensor:
    n, d = rows[0].numel(), x.shape[-1]
    if cfg.diversity == "topk_entropy":
        _, entropy_sum = _kernels.KLTopKEntropy.apply(
            x, None, *rows, cfg.temperature, cfg.entropy_top_k, cfg.chunk_size
        )
        return _entropy_term(entropy_sum, n)
    if cfg.diversity == "entropy":
        return _entropy_term(_kernels.EntropyRowSum.apply(x, *rows, cfg.chunk_size), n)
    if n == 1:
        return _zero(x)  # the covariance of one row is undefined (N−1 = 0)
    frob_sq, diag_sq = _kernels.covariance_sums(x, *rows, cfg.chunk_size)
    # Σ_{a≠b} C_ab² = ‖C‖_F² − Σ_a C_aa², C = Zcᵀ Zc / (N−1).
    off_diag = (frob_sq - diag_sq) / (n - 1) ** 2
    return (off_diag / d).float()


def _svd(x: torch.Tensor, rows: _Rows, cfg: RegularizerConfig) -> torch.Tensor:
    n, d = rows[0].numel(), x.shape[-1]
    if n <= d:  # NLG (N ≪ V): Z Zᵀ with an analytic backward
        gram = _kernels.RowGram.apply(x, *rows, cfg.chunk_size)
    else:
        gram = _kernels.column_gram(x, *rows, cfg.chunk_size)
    return _svd_from_gram(gram, cfg, n, d).float()


def _svd_hidden(
    hidden: torch.Tensor, head_factor: torch.Tensor, cfg: RegularizerConfig, num_columns: int
) -> torch.Tensor:
    """_svd_from_gram of the Gram of H L (hidden: the (N, H_dim) valid rows)."""
    return _svd_from_gram(
        _kernels.hidden_gram(hidden, head_factor), cfg, hidden.shape[0], num_columns
    ).float()


def _svd_from_gram(gram: torch.Tensor, cfg: RegularizerConfig, n: int, d: int) -> torch.Tensor:
    """−Σ_{i≤k} σ_i / (Σ σ or ‖Z‖_F) from the float64 Gram matrix (its eigenvalues are σ²)."""
    if cfg.svd_eigensolver == "lobpcg" and gram.shape[0] >= 3 * cfg.svd_top_k and d > cfg.svd_top_k:
        # Only the top-k σ² and trace(G) = ‖Z‖_F² enter the frobenius form: no full spectrum needed
        # (LOBPCG needs a matrix of size ≥ 3k).
        eig = _kernels.TopEigenvalues.apply(gram, cfg.svd_top_k, _warn_lobpcg_fallback)  # (k,) σ², descending
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
# Input validation
# ---------------------------------------------------------------------------------------------


def _check_logits(logits: torch.Tensor, name: str, dim: int, shape_error: str) -> None:
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor")
    if logits.dim() != dim:
        raise ValueError(shape_error.format(shape=tuple(logits.shape)))
    if logits.shape[-1] < 1:
        raise ValueError(f"{name} must have at least one column")


def _check_reference(
    ref_logits: torch.Tensor | None, logits: torch.Tensor, names: tuple[str, str], optional: bool
) -> torch.Tensor | None:
    """The detached reference logits, checked against the student's (None only when optional)."""
    if ref_logits is None and optional:
        return None
    if not torch.is_tensor(ref_logits) or not ref_logits.is_floating_point():
        raise TypeError(f"{names[0]} must be a floating-point tensor" + (" or None" if optional else ""))
    if ref_logits.shape != logits.shape:
        raise ValueError(
            f"{names[0]} shape {tuple(ref_logits.shape)} != {names[1]} shape {tuple(logits.shape)}"
        )
    return ref_logits.detach()


def _selected_rows(
    cfg: RegularizerConfig,
    logits: torch.Tensor,
    ref_logits: torch.Tensor | None = None,
    with_ref: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, _Rows]:
    """Validate the (N, D) rows of the per-term functions; return (1, N, D) views and the row indices."""
    if not isinstance(cfg, RegularizerConfig):
        raise TypeError(f"cfg must be a RegularizerConfig, got {type(cfg).__name__}")
    _check_logits(
        logits, "student_logits", 2, "student_logits must be the (N, D) selected rows, got shape {shape}"
    )
    ref = _check_reference(ref_logits, logits, ("reference_logits", "student_logits"), optional=not with_ref)
    n = logits.shape[0]
    rows = (torch.zeros(n, dtype=torch.long, device=logits.device), torch.arange(n, device=logits.device))
    return logits.unsqueeze(0), None if ref is None else ref.unsqueeze(0), rows


def _prepare_inputs(
    logits: torch.Tensor,
    ref_logits: torch.Tensor | None,
    mask: torch.Tensor | None,
    cfg: RegularizerConfig,
) -> tuple[torch.Tensor, torch.Tensor | None, _Rows]:
    """Validate shapes; return (B', T', D) views of logits / ref and the (b, t) indices of valid rows."""
    nlg = cfg.task == "nlg"
    layout = "(B, T, V)" if nlg else "(B, C)"
    _check_logits(
        logits,
        "logits",
        3 if nlg else 2,
        f"task={cfg.task!r} expects logits of shape {layout}, "
        "got {shape}; set RegularizerConfig.task to match the model",
    )
    ref = _check_reference(ref_logits, logits, ("ref_logits", "logits"), optional=True)
    if mask is None:
        valid = torch.ones(logits.shape[:-1], dtype=torch.bool, device=logits.device)
    else:
        if not torch.is_tensor(mask) or mask.dtype != torch.bool:
            raise ValueError("mask must be a bool tensor (e.g. labels != -100) or None")
        if mask.shape != logits.shape[:-1]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != logits.shape[:-1] {tuple(logits.shape[:-1])}"
            )
        valid = mask.to(logits.device)
    if not nlg:  # NLU is handled as one "sequence" of B rows: unsqueeze is a view, no copy.
        logits, ref, valid = (
            logits.unsqueeze(0),
            None if ref is None else ref.unsqueeze(0),
            valid.unsqueeze(0),
        )
    return logits, ref, valid.nonzero(as_tuple=True)  # (B', T', D), ref alike, rows (N,), (N,)


def _check_factor(head_factor: torch.Tensor, hidden_dim: int) -> None:
    if not torch.is_tensor(head_factor) or head_factor.dim() != 2 or head_factor.shape[0] != hidden_dim:
        shape = tuple(head_factor.shape) if torch.is_tensor(head_factor) else type(head_factor).__name__
        raise ValueError(f"head_factor must be ({hidden_dim}, r) from head_gram_factor(W), got {shape}")


def _check_hidden(hidden: torch.Tensor, head_factor: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Validate the hidden-space input; return it as a (B', T', H_dim) view matching _prepare_inputs."""
    if not torch.is_tensor(hidden) or not hidden.is_floating_point():
        raise TypeError("hidden must be a floating-point tensor")
    if hidden.shape[:-1] != logits.shape[:-1]:
        raise ValueError(
            f"hidden shape {tuple(hidden.shape)} must be logits.shape[:-1] + (H_dim,) = "
            f"{tuple(logits.shape[:-1])} + (H_dim,)"
        )
    _check_factor(head_factor, hidden.shape[-1])
    return hidden if logits.dim() == 3 else hidden.unsqueeze(0)
