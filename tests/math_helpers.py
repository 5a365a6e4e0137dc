"""Random matrices shared by the measure tests."""
import numpy as np


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
