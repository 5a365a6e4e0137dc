"""Linear Gram matrices of layer activations, fast and accurate, and their centring for HSIC.

:func:`layer_grams` turns the activations of L layers for one batch of n samples into a float64
stack ``(L, n, n)`` of Gram matrices ``Xc Xc^T``; :func:`u_center_` and :func:`double_center_` prepare
them for the unbiased and the biased HSIC (see :mod:`src.similarity.hsic`).

Precision. A Gram formed in float32 from data with a large common offset loses its information to
cancellation (an offset of 1e4 on unit-scale data leaves nothing of float32's 24 bits), so the
columns are always centred first, before any product is formed. The float32 mean is exact enough
for that: what it leaves of the offset is tiny, causes no cancellation, and is removed exactly by
the float64 centring of the Gram that follows (both HSIC estimators are invariant to translation).
Everything after the Gram (centring, products, sums) is float64. ``precision="float64"`` also forms
the Gram in float64 (about 2x slower on CPUs, much slower on most GPUs).

Speed. The Gram is ``torch.mm`` (the BLAS of the build: MKL on x86 CPUs, cuBLAS on GPUs); batches
of 128 or more samples compute only the row blocks on and above the diagonal
(:func:`symmetric_gram`, 3/4 or 5/8 of the flops). The column means come from a matrix-vector
product, several times faster on CPUs than a column reduction.
"""
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch

from src.errors import UserError

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def gram_precision(precision) -> torch.dtype:
    """``"float32"`` / ``"float64"`` (or the torch dtype) as a dtype; anything else is a UserError."""
    if isinstance(precision, torch.dtype) and precision in PRECISIONS.values():
        return precision
    if precision not in PRECISIONS:
        raise UserError(f"unknown Gram precision {precision!r}; choose float32 or float64")
    return PRECISIONS[precision]


# ---------------------------------------------------------------------------------------------
# X X^T
# ---------------------------------------------------------------------------------------------

def _matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b.T


def row_blocks(n: int) -> int:
    """How many row blocks :func:`symmetric_gram` uses: 1 below 128 rows, 2 below 256, else 4
    (blocks of fewer than 64 rows ran slower than the flops they save on the CPUs measured)."""
    return 1 if n < 128 else (2 if n < 256 else 4)


def upper_row_blocks(x: torch.Tensor, blocks: int, product: Callable = _matmul_t) -> Iterator[Tuple[int, torch.Tensor]]:
    """``(start, x[start:stop] @ x[start:].T)`` for ``blocks`` consecutive row blocks of ``x``: the
    blocks of ``x @ x.T`` on and above the diagonal (the first ``stop - start`` columns of each are
    the diagonal block)."""
    n = x.shape[0]
    step = -(-n // max(1, blocks))
    for start in range(0, n, step):
        yield start, product(x[start:start + step], x[start:])


def symmetric_gram(x: torch.Tensor, product: Callable = _matmul_t, blocks: Optional[int] = None) -> torch.Tensor:
    """``x @ x.T`` computing only the row blocks on and above the diagonal (5/8 of the flops for 4
    blocks, 3/4 for 2); the lower blocks are copied from the upper ones. ``product(a, b)`` is
    ``a @ b.T`` by some backend; ``blocks`` defaults to :func:`row_blocks`."""
    n = x.shape[0]
    blocks = row_blocks(n) if blocks is None else blocks
    if blocks <= 1:
        return product(x, x)
    out = torch.empty(n, n, dtype=x.dtype, device=x.device)
    for start, block in upper_row_blocks(x, blocks, product):
        stop = start + block.shape[0]
        out[start:stop, start:] = block
        if stop < n:
            out[stop:, start:stop] = block[:, stop - start:].T
    return out


def gram_product(x: torch.Tensor) -> torch.Tensor:
    """``x @ x.T`` (n x n, dtype of ``x``), symmetric blocks from 128 rows on."""
    return symmetric_gram(x)


# ---------------------------------------------------------------------------------------------
# Gram matrices of activations
# ---------------------------------------------------------------------------------------------

#: Rows whose mean centres the columns before the Gram (evenly spaced over the batch).
MEAN_ROWS = 16


def centered_rows(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x`` as ``n x D`` rows in ``dtype`` with the columns centred before any product.

    The shift is the mean of :data:`MEAN_ROWS` evenly spaced rows (all rows for small batches), a
    matrix-vector product over a few rows: what it leaves of an offset is about a quarter of the
    features' spread, which costs float32 no accuracy in the Gram, and the float64 centring of the
    Gram afterwards removes it exactly (the HSIC estimators are invariant to translation).
    """
    rows = x.reshape(x.shape[0], -1).to(dtype)
    return rows - sample_mean(rows)


def sample_mean(rows: torch.Tensor) -> torch.Tensor:
    """``(..., 1, D)``: the mean over axis -2 of :data:`MEAN_ROWS` evenly spaced rows of ``... x n x D`` (all rows
    for small n), as a matrix-vector product in ``rows``' dtype: the shift that centring subtracts first."""
    some = rows[..., ::max(1, rows.shape[-2] // MEAN_ROWS), :]
    weights = torch.full((1, some.shape[-2]), 1.0 / some.shape[-2], dtype=rows.dtype, device=rows.device)
    return weights @ some


def linear_gram(x: torch.Tensor, precision="float32") -> torch.Tensor:
    """``Xc Xc^T`` of the column-centred rows of ``x`` (n x ...; :func:`centered_rows`), formed in
    ``precision``; exactly centred once double centred or U-centred (in float64) as the estimators do."""
    return gram_product(centered_rows(x, gram_precision(precision)))


def layer_grams(acts: Sequence[torch.Tensor], precision="float32", device=None) -> torch.Tensor:
    """Float64 stack ``(L, n, n)`` of the Grams (:func:`linear_gram`) of ``L`` activations of n samples."""
    dtype = gram_precision(precision)
    n = int(acts[0].shape[0])
    device = acts[0].device if device is None else torch.device(device)
    grams = torch.empty(len(acts), n, n, dtype=dtype, device=device)
    for i, a in enumerate(acts):
        if a.shape[0] != n:
            raise UserError(f"activation {i} has {a.shape[0]} samples, the first one {n}")
        grams[i] = linear_gram(a.to(device), dtype)
    return grams.to(torch.float64)


def u_center_(k: torch.Tensor) -> torch.Tensor:
    """U-centre a stack ``(..., n, n)`` of symmetric matrices in place (n >= 4); returns it.

    ``K^_ij = K~_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2))`` off the diagonal and 0 on it, with
    K~ the matrix with zero diagonal, r its row sums and s their total (Szekely & Rizzo 2014).
    """
    n = k.shape[-1]
    k.diagonal(dim1=-2, dim2=-1).zero_()
    rows = k.sum(dim=-1)
    shift = rows / (n - 2) - (rows.sum(dim=-1) / (2 * (n - 1) * (n - 2))).unsqueeze(-1)  # r_i/(n-2) - s/(2(n-1)(n-2))
    k.sub_(shift.unsqueeze(-1)).sub_(shift.unsqueeze(-2))
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def double_center_(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` of a stack ``(..., n, n)`` of symmetric matrices, in place; returns it."""
    rows = k.mean(dim=-1)
    shift = rows - (rows.mean(dim=-1) / 2).unsqueeze(-1)  # K_ij - r_i - r_j + total = K_ij - shift_i - shift_j
    k.sub_(shift.unsqueeze(-1)).sub_(shift.unsqueeze(-2))
    return k
