"""Linear Gram matrices of layer activations, fast and accurate, and their centring for HSIC.

:func:`layer_grams` turns the activations of L layers for one batch of n samples into a float64
stack ``(L, n, n)`` of Gram matrices ``X X^T``; :func:`u_center_` and :func:`double_center_` prepare
them for the unbiased and the biased HSIC (see :mod:`src.similarity.matrix`).

Precision. A Gram formed in float32 from data with a large common offset loses its information to
cancellation (an offset of 1e4 on unit-scale data leaves nothing of float32's 24 bits), so the
columns are always centred first, before any product is formed. The float32 mean is exact enough
for that: what it leaves of the offset is tiny, causes no cancellation, and is removed exactly by
the float64 centring of the Gram that follows (both HSIC estimators are invariant to translation). Everything after the Gram (centring, products, sums) is
float64. ``precision="float64"`` also forms the Gram in float64 (about 2x slower on CPUs, much
slower on most GPUs).

Speed. On CPUs, float32 layers of at least :data:`ONEDNN_MIN_FEATURES` features get their Gram from
oneDNN's inner product (the library behind PyTorch's CPU convolutions, with AVX-512 kernels on any
x86 CPU; on the AMD EPYC measured it took under half the time of ``torch.mm``, whose MKL takes a
generic path there), smaller ones from ``torch.mm``; either way batches of 128 or more samples
compute only the blocks on and above the diagonal (:func:`symmetric_gram`).
"""
from functools import lru_cache
from typing import Callable, Optional, Sequence

import torch

from src.errors import UserError

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
#: CPU float32 layers at least this wide get their Gram from oneDNN (when available).
ONEDNN_MIN_FEATURES = 1024


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
    """How many row blocks :func:`symmetric_gram` uses: 1 below 128 rows, else up to 4 of >= 64 rows
    (smaller blocks ran slower than the flops they save on the CPUs measured)."""
    return 1 if n < 128 else min(4, n // 64)


def symmetric_gram(x: torch.Tensor, product: Callable = _matmul_t, blocks: Optional[int] = None) -> torch.Tensor:
    """``x @ x.T`` computing only the row blocks on and above the diagonal (5/8 of the flops for 4
    blocks, 3/4 for 2); the lower blocks are copied from the upper ones. ``product(a, b)`` is
    ``a @ b.T`` by some backend; ``blocks`` defaults to :func:`row_blocks`."""
    n = x.shape[0]
    blocks = row_blocks(n) if blocks is None else blocks
    if blocks <= 1:
        return product(x, x)
    out = torch.empty(n, n, dtype=x.dtype, device=x.device)
    step = -(-n // blocks)
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = product(x[start:stop], x[start:])
        out[start:stop, start:] = block
        if stop < n:
            out[stop:, start:stop] = block[:, stop - start:].T
    return out


def _onednn_candidates():
    """oneDNN routes to ``a @ b.T`` for dense, contiguous float32 CPU tensors, newest first."""
    pointwise = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if pointwise is not None:
        yield lambda a, b: pointwise(a, b, None, "none", [], "")
    linear = getattr(getattr(torch._C, "_nn", None), "mkldnn_linear", None)
    if linear is not None:
        yield lambda a, b: linear(a.to_mkldnn(), b.to_mkldnn(), None).to_dense()


@lru_cache(maxsize=None)
def onednn_product() -> Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The first oneDNN route that exists in this build and agrees with ``torch.mm`` (else None).

    These are PyTorch-internal ops (``torch.ops.mkldnn._linear_pointwise``, or the op behind
    ``torch.utils.mkldnn``); anything missing or wrong falls back to ``torch.mm``.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    a = (torch.arange(40, dtype=torch.float32).reshape(5, 8) % 7 - 3) / 7
    b = a[:3].flip(1).contiguous()
    for candidate in _onednn_candidates():
        try:
            if torch.allclose(candidate(a, b), a @ b.T, rtol=1e-5, atol=1e-6):
                return candidate
        except (RuntimeError, TypeError, AttributeError, NotImplementedError):  # pragma: no cover - build dependent
            continue
    return None  # pragma: no cover


def gram_product(x: torch.Tensor) -> torch.Tensor:
    """``x @ x.T`` (n x n, dtype of ``x``) by the fastest exact route for the device and size."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[1] >= ONEDNN_MIN_FEATURES
            and torch.backends.mkldnn.enabled):
        product = onednn_product()
        if product is not None:
            return symmetric_gram(x.contiguous(), product)
    return symmetric_gram(x)


# ---------------------------------------------------------------------------------------------
# Gram matrices of activations
# ---------------------------------------------------------------------------------------------

def centered_rows(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x`` as ``n x D`` rows in ``dtype`` with the column means subtracted."""
    rows = x.reshape(x.shape[0], -1).to(dtype)
    return rows - rows.mean(dim=0, keepdim=True)


def linear_gram(x: torch.Tensor, precision="float32") -> torch.Tensor:
    """``Xc Xc^T`` of the column-centred rows of ``x`` (n x ...), formed in ``precision``."""
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
    total = rows.sum(dim=-1)
    k.sub_(rows.unsqueeze(-1) / (n - 2)).sub_(rows.unsqueeze(-2) / (n - 2))
    k.add_((total / ((n - 1) * (n - 2)))[..., None, None])
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def double_center_(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` of a stack ``(..., n, n)`` of symmetric matrices, in place; returns it."""
    rows = k.mean(dim=-1)
    total = rows.mean(dim=-1)
    k.sub_(rows.unsqueeze(-1)).sub_(rows.unsqueeze(-2)).add_(total[..., None, None])
    return k
