"""Fused, chunked kernels behind the BA-LoRA regularisers of balora/regularizers.py (docs/method.md §3).

Every kernel reads the logits x (B', T', D) only at the N valid rows given by the index pair
(rows_b, rows_t), each (N,); rows outside them are never read and get exactly zero gradient.

Numerics and memory:
    * Inputs may be bf16/fp16; the softmax family is computed in fp32 (via log_softmax, never
      softmax().log()), Gram matrices in float64, upcasting one chunk at a time.
    * Rows (or, for the Gram matrices, column blocks of the same element count) are processed in
      chunks of ``chunk_size`` rows. Either the kernel is an autograd function with an analytic
      backward (the KL, the entropies, the row Gram), or each chunk runs under non-reentrant
      activation checkpointing (`checkpointed`), so only one chunk's upcast copy is alive at a time in
      the forward and in the backward pass. A 256k-vocabulary micro-batch therefore costs about
      chunk_size × V × 4 bytes of extra memory, not B × T × V × 4. The exception is
      `KLTopKEntropy`, which computes its gradient in the forward and keeps it as one N × V tensor in
      the logits' dtype (the size of the gradient its backward returns), so that no softmax is
      computed twice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# eps of the per-row L2 normalisation in mse_normalized (F.normalize's default): a zero row maps to 0.
NORM_EPS = 1e-12
# Replaces log-probabilities of -inf (a logit of -inf) so that 0·log 0 is 0 with a finite gradient.
LOGP_FLOOR = torch.finfo(torch.float32).min
# Rows of a head weight W upcast to float64 at once while forming Wᵀ W (bounds the memory at a 256k
# vocabulary).
HEAD_ROWS_PER_BLOCK = 8192


def checkpointed(fn: Callable, x: torch.Tensor, *args):
    """fn(x, *args), recomputed in the backward instead of keeping its upcast intermediates."""
    if torch.is_grad_enabled() and x.requires_grad:
        return checkpoint(fn, x, *args, use_reentrant=False, preserve_rng_state=False)
    return fn(x, *args)


def row_chunks(x: torch.Tensor, rows_b: torch.Tensor, rows_t: torch.Tensor, chunk_size: int):
    """Yields (start, stop, chunk) over the N valid rows of x (B', T', D), chunk (c, D) in x's dtype.

    When every row is valid (the gathered (1, N, V) rows) a chunk is a view of x, not a gathered copy.
    """
    n = rows_b.numel()
    flat = x.reshape(-1, x.shape[-1]) if n == x.shape[0] * x.shape[1] else None  # (N, D) view or None
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        yield (
            start,
            stop,
            (flat[start:stop] if flat is not None else x[rows_b[start:stop], rows_t[start:stop]]),
        )


# ---------------------------------------------------------------------------------------------
# Softmax family: KL, top-K entropy, full entropy, normalised MSE
# ---------------------------------------------------------------------------------------------


class KLTopKEntropy(torch.autograd.Function):
    """Row sums of the two softmax terms of the ICLR-2026 NLG form in one pass over the N valid rows:

        kl      = Σ_rows KL(softmax(Z_ref/T) ‖ softmax(Z/T))          (ref given, else 0)
        entropy = Σ_rows H(softmax(top-K of z))                        (top_k given, else 0)

    apply(x, ref, rows_b, rows_t, temperature, top_k, chunk_size) -> (kl, entropy), 0-d fp32.

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
        grad_kl = (
            torch.empty((n, d), dtype=x.dtype, device=x.device) if need_grad and ref is not None else None
        )
        top_index = top_grad = None
        if top_k is not None:
            k = min(top_k, d)
            top_index = torch.empty((n, k), dtype=torch.long, device=x.device)
            top_grad = torch.empty((n, k), dtype=torch.float32, device=x.device) if need_grad else None
        ref_chunks = row_chunks(ref, rows_b, rows_t, chunk_size) if ref is not None else None
        # fp32 (c, D) buffers that every chunk reuses (the ops write into them with out=): fresh N × D
        # temporaries cost more than their arithmetic on a CPU, where each large allocation comes
        # from the OS as new pages to fault in and zero. The scratch is the kept gradient itself
        # when that is fp32.
        log_p_buffer = log_p_ref_buffer = scratch_buffer = None
        for start, stop, chunk in row_chunks(x, rows_b, rows_t, chunk_size):
            z = chunk.float()  # (c, D); a view when the logits are fp32
            if top_k is not None:
                values, index = z.topk(k, dim=-1)  # (c, K)
                log_q = F.log_softmax(values, dim=-1).clamp_min_(LOGP_FLOOR)
                q = log_q.exp()
                row_entropy = -(q * log_q).sum(dim=-1, keepdim=True)  # (c, 1)
                entropy += row_entropy.sum()
                top_index[start:stop] = index
                if need_grad:
                    top_grad[start:stop] = -q * (log_q + row_entropy)  # dH/dz on the top-K entries
            if ref is not None:
                if log_p_buffer is None:
                    log_p_buffer = torch.empty((min(chunk_size, n), d), dtype=torch.float32, device=x.device)
                    log_p_ref_buffer = torch.empty_like(log_p_buffer)
                    if grad_kl is None or grad_kl.dtype != torch.float32:
                        scratch_buffer = torch.empty_like(log_p_buffer)
                rows = stop - start
                scratch = scratch_buffer[:rows] if scratch_buffer is not None else grad_kl[start:stop]
                log_p = torch.log_softmax(
                    torch.div(z, temperature, out=scratch), dim=-1, out=log_p_buffer[:rows]
                ).clamp_min_(LOGP_FLOOR)  # (c, D)
                log_p_ref = torch.log_softmax(
                    torch.div(next(ref_chunks)[2].float(), temperature, out=scratch),
                    dim=-1,
                    out=log_p_ref_buffer[:rows],
                ).clamp_min_(LOGP_FLOOR)
                p_ref = torch.exp(log_p_ref, out=scratch)
                kl += (
                    torch.sub(log_p_ref, log_p, out=log_p_ref).mul_(p_ref).sum()
                )  # Σ p_ref (log p_ref − log p)
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
            raise RuntimeError(
                "the fused KL/top-K entropy gradient was already used: backward through these "
                "BA-LoRA terms runs once (recompute the terms to differentiate again)"
            )
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


class EntropyRowSum(torch.autograd.Function):
    """Σ over valid rows of H(softmax(z)), fp32, chunked; analytic backward dH/dz = −p (log p + H).

    apply(x, rows_b, rows_t, chunk_size) -> 0-d fp32. The backward recomputes each chunk's softmax, so
    nothing N × D is kept.
    """

    @staticmethod
    def forward(ctx, x, rows_b, rows_t, chunk_size):
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for start in range(0, rows_b.numel(), chunk_size):
            rb, rt = rows_b[start : start + chunk_size], rows_t[start : start + chunk_size]
            log_p = F.log_softmax(x[rb, rt].float(), dim=-1).clamp_min_(LOGP_FLOOR)  # (c, D)
            total -= (log_p.exp() * log_p).sum()
        ctx.save_for_backward(x, rows_b, rows_t)
        ctx.chunk_size = chunk_size
        return total

    @staticmethod
    def backward(ctx, grad_total):
        x, rows_b, rows_t = ctx.saved_tensors
        grad_x = torch.zeros_like(x)
        for start in range(0, rows_b.numel(), ctx.chunk_size):
            rb, rt = rows_b[start : start + ctx.chunk_size], rows_t[start : start + ctx.chunk_size]
            log_p = F.log_softmax(x[rb, rt].float(), dim=-1).clamp_min_(LOGP_FLOOR)  # (c, D)
            p = log_p.exp()
            entropy = -(p * log_p).sum(dim=-1, keepdim=True)  # (c, 1)
            grad_x[rb, rt] = (-p * (log_p + entropy) * grad_total).to(x.dtype)
        return grad_x, None, None, None


def normalized_mse_sum(
    x: torch.Tensor, ref: torch.Tensor, rows_b: torch.Tensor, rows_t: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Σ over the valid rows and all D columns of (z/‖z‖ − z_ref/‖z_ref‖)², per-row L2 norms (fp32).

    Chunks of rows run under activation checkpointing (N ≥ 1).
    """
    total = None
    for start in range(0, rows_b.numel(), chunk_size):
        sl = slice(start, start + chunk_size)
        chunk_sum = checkpointed(_normalized_mse_chunk, x, ref, rows_b[sl], rows_t[sl])
        total = chunk_sum if total is None else total + chunk_sum
    return total


def _normalized_mse_chunk(x, ref, rows_b, rows_t) -> torch.Tensor:
    z = x[rows_b, rows_t].float()  # (c, D)
    z_ref = ref[rows_b, rows_t].float()  # (c, D)
    diff = F.normalize(z, dim=-1, eps=NORM_EPS) - F.normalize(z_ref, dim=-1, eps=NORM_EPS)
    return diff.square().sum()


# ---------------------------------------------------------------------------------------------
# Gram matrices (float64): the SVD term's spectrum and the covariance term
# ---------------------------------------------------------------------------------------------


def _column_block_width(n: int, d: int, chunk_size: int) -> int:
    """Columns per block so that an N-row block holds about chunk_size·D/2 float64 entries (the bytes
    of one fp32 chunk of rows)."""
    return max(1, chunk_size * d // (2 * n))


class RowGram(torch.autograd.Function):
    """G = Z Zᵀ (N×N, float64) of the valid rows, accumulated over column blocks; backward (Ḡ+Ḡᵀ) Z.

    apply(x, rows_b, rows_t, chunk_size) -> (N, N) float64; the form for N ≤ D (NLG: N ≪ V). Column
    blocks hold about chunk_size·D/2 float64 entries, so the memory bound is that of the row-chunked
    terms; nothing N×D is saved for the backward.
    """

    @staticmethod
    def forward(ctx, x, rows_b, rows_t, chunk_size):
        n, d = rows_b.numel(), x.shape[-1]
        cols = _column_block_width(n, d, chunk_size)
        gram = torch.zeros((n, n), dtype=torch.float64, device=x.device)
        for start in range(0, d, cols):
            z = x[:, :, start : start + cols][rows_b, rows_t].double()  # (N, cols)
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


def column_gram(x: torch.Tensor, rows_b: torch.Tensor, rows_t: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Zᵀ Z (D×D, float64) of the valid rows, the form for N > D (same nonzero spectrum as Z Zᵀ).

    Accumulated over checkpointed row chunks (N ≥ 1).
    """
    gram = None
    for start in range(0, rows_b.numel(), chunk_size):
        sl = slice(start, start + chunk_size)
        block = checkpointed(_row_block_gram, x, rows_b[sl], rows_t[sl])
        gram = block if gram is None else gram + block
    return gram


def _row_block_gram(x, rows_b, rows_t) -> torch.Tensor:
    z = x[rows_b, rows_t].double()  # (c, D)
    return z.T @ z  # (D, D)


def covariance_sums(
    x: torch.Tensor, rows_b: torch.Tensor, rows_t: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """‖Zcᵀ Zc‖_F² and Σ_a (Zcᵀ Zc)_aa² (float64), Zc = Z − mean_rows Z, for N ≥ 1 valid rows.

    Uses the smaller Gram: Zc Zcᵀ (N×N, same Frobenius norm) when N ≤ D, accumulated over column
    blocks (each block holds all N rows, so the column means for centring are exact inside it);
    Zcᵀ Zc (D×D) when N > D, accumulated over row chunks after a pass for the column means. Each block
    runs under activation checkpointing.
    """
    n, d = rows_b.numel(), x.shape[-1]
    if n <= d:
        cols = _column_block_width(n, d, chunk_size)
        centred_gram = diag_sq = None
        for start in range(0, d, cols):
            g, dsq = checkpointed(_centred_column_block, x, rows_b, rows_t, start, start + cols)
            centred_gram = g if centred_gram is None else centred_gram + g
            diag_sq = dsq if diag_sq is None else diag_sq + dsq
        return centred_gram.square().sum(), diag_sq

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
        block = checkpointed(_centred_row_block, x, rows_b[sl], rows_t[sl], mean)
        cov = block if cov is None else cov + block
    return cov.square().sum(), cov.diagonal().square().sum()


def _centred_column_block(x, rows_b, rows_t, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Contributions of columns [start, stop) to Zc Zcᵀ and Σ_a (Zcᵀ Zc)_aa² (float64)."""
    z = x[:, :, start:stop][rows_b, rows_t].double()  # (N, cols)
    zc = z - z.mean(dim=0, keepdim=True)  # (N, cols), centred over rows
    return zc @ zc.T, zc.square().sum(dim=0).square().sum()


def _centred_row_block(x, rows_b, rows_t, mean: torch.Tensor) -> torch.Tensor:
    """Contribution of one row chunk to Zcᵀ Zc (float64, D×D)."""
    zc = x[rows_b, rows_t].double() - mean  # (c, D)
    return zc.T @ zc


class TopEigenvalues(torch.autograd.Function):
    """The k largest eigenvalues of a symmetric PSD matrix G (N×N, float64), descending, by LOBPCG.

    apply(gram, k, on_fallback) -> (k,). Forward returns the Rayleigh quotients v_iᵀ G v_i of the
    converged eigenvectors; backward is dλ_i/dG = v_i v_iᵀ, the exact gradient of a simple eigenvalue
    (the same one eigh's gives). The start block comes from a fixed-seed generator, so the global RNG
    (dropout, sampling) is untouched. Pairs whose residual ‖G v − λ v‖ exceeds 1e-6·λ_max fall back to
    the full eigh, and on_fallback(residual) is called (when not None).
    """

    @staticmethod
    def forward(ctx, gram, k, on_fallback):
        with torch.no_grad():
            start = torch.randn(
                gram.shape[0], k, dtype=gram.dtype, generator=torch.Generator().manual_seed(0)
            ).to(gram.device)
            _, vectors = torch.lobpcg(gram, X=start, largest=True)  # (N, k)
            values = ((gram @ vectors) * vectors).sum(dim=0)  # (k,) Rayleigh quotients
            order = values.argsort(descending=True)
            values, vectors = values[order], vectors[:, order]
            residual = (gram @ vectors - vectors * values).norm(dim=0).max()
            if not bool(residual <= 1e-6 * values[0].abs().clamp_min(torch.finfo(gram.dtype).tiny)):
                if on_fallback is not None:
                    on_fallback(float(residual))
                all_values, all_vectors = torch.linalg.eigh(gram)
                values, vectors = all_values.flip(-1)[:k], all_vectors.flip(-1)[:, :k]
        ctx.save_for_backward(vectors)
        return values

    @staticmethod
    def backward(ctx, grad_values):
        (vectors,) = ctx.saved_tensors  # (N, k)
        return (vectors * grad_values) @ vectors.T, None, None


# ---------------------------------------------------------------------------------------------
# Row capture: the N supervised rows of the student's logits, taken at the LM head's output
# ---------------------------------------------------------------------------------------------


class RowsTap(torch.autograd.Function):
    """Identity on the student's (B, T, V) logits that also returns their N supervised rows (N, V).

    apply(logits, rows_b, rows_t) -> (logits, rows). A plain gather `logits[rows_b, rows_t]`
    backpropagates through a fresh B×T×V zero tensor, an accumulating index_put of the N rows into it,
    and autograd's B×T×V sum with the task loss's gradient. Here the backward adds the rows' gradient
    to the task loss's gradient at the N rows (index_add into a copy: the gradient autograd hands in
    is not modified). The same sums, element by element (g_task + g_rows), so the result is
    bit-identical, without the B×T×V temporaries.
    """

    @staticmethod
    def forward(ctx, logits, rows_b, rows_t):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(rows_b, rows_t)
        ctx.logits_shape = logits.shape
        return logits, logits[rows_b, rows_t]  # autograd returns the first as a view of the input

    @staticmethod
    def backward(ctx, grad_logits, grad_rows):
        if grad_rows is None:
            return grad_logits, None, None
        rows_b, rows_t = ctx.saved_tensors
        batch, length, vocab = ctx.logits_shape
        if grad_logits is None:
            grad_logits = grad_rows.new_zeros(ctx.logits_shape)
        positions = rows_b * length + rows_t  # (N,) flat (b, t) indices, each once
        summed = grad_logits.reshape(batch * length, vocab).index_add(0, positions, grad_rows)
        return summed.view(batch, length, vocab), None, None


# ---------------------------------------------------------------------------------------------
# Hidden space: logits Z = H Wᵀ of a frozen linear head W (D × H_dim)
# ---------------------------------------------------------------------------------------------


def head_gram(weight: torch.Tensor) -> torch.Tensor:
    """Wᵀ W (H_dim × H_dim, float64) of a detached head weight W (D, H_dim), in blocks of rows of W."""
    gram = torch.zeros((weight.shape[1], weight.shape[1]), dtype=torch.float64, device=weight.device)
    for start in range(0, weight.shape[0], HEAD_ROWS_PER_BLOCK):
        block = weight[start : start + HEAD_ROWS_PER_BLOCK].double()  # (rows, H_dim)
        gram.addmm_(block.T, block)
    return gram


def hidden_gram(hidden: torch.Tensor, head_factor: torch.Tensor) -> torch.Tensor:
    """The Gram of Y = H L (N × r, float64): Y Yᵀ = Z Zᵀ when N ≤ r, else Yᵀ Y (same nonzero σ²).

    hidden: (N, H_dim) rows; head_factor: L (H_dim, r) with L Lᵀ = Wᵀ W.
    """
    y = hidden.double() @ head_factor.to(hidden.device)  # (N, r)
    n, r = y.shape
    return y @ y.T if n <= r else y.T @ y  # (min(N, r),)²
