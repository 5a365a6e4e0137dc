"""Random matrices shared by the measure tests, and resampling written out for the stitch kinds' tests."""
import math

import numpy as np
import torch


def rng(seed=0):
    return np.random.default_rng(seed)


def orthogonal(d, seed):
    """A Haar-random d x d orthogonal matrix."""
    q, r = np.linalg.qr(rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def sum_tol(n_terms: int, eps: float = EPS64, safety: float = 10.0) -> float:
    """A relative tolerance for two computations of one value that sum ``n_terms`` terms in different orders.

    Higham's bound for a sum of n floating-point terms is gamma_n ~ n * eps times the sum of the terms'
    magnitudes; the quantities compared here are well-conditioned (that sum is of the order of the result),
    so ``safety * n * eps`` holds on any CPU, whatever order its BLAS or vector kernels sum in. For a
    Gram-based statistic of N samples and D features n is N * N + D (D products per Gram entry, N^2 entries).
    """
    return safety * n_terms * eps

def area_average(x: torch.Tensor, size) -> torch.Tensor:
    """Adaptive average pooling written out: output i averages inputs floor(i*n/m) .. ceil((i+1)*n/m) - 1."""
    def windows(n, m):
        return [(math.floor(i * n / m), math.ceil((i + 1) * n / m)) for i in range(m)]
    (h, w), (oh, ow) = x.shape[-2:], size
    out = torch.empty(*x.shape[:-2], oh, ow, dtype=x.dtype)
    for i, (a, b) in enumerate(windows(h, oh)):
        for j, (c, d) in enumerate(windows(w, ow)):
            out[..., i, j] = x[..., a:b, c:d].mean(dim=(-2, -1))
    return out


def nearest_resize(x: torch.Tensor, size) -> torch.Tensor:
    """Nearest resizing written out: output i takes input floor(i * n / m)."""
    (h, w), (oh, ow) = x.shape[-2:], size
    rows = [math.floor(i * h / oh) for i in range(oh)]
    cols = [math.floor(j * w / ow) for j in range(ow)]
    return x[..., rows, :][..., :, cols]
