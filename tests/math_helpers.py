"""Random matrices shared by the measure tests."""
import numpy as np


def rng(seed=0):
    return np.random.default_rng(seed)


def orthogonal(d, seed):
    """A Haar-random d x d orthogonal matrix."""
    q, r = np.linalg.qr(rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))
