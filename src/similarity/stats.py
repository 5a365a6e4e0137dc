"""Permutation tests and bootstrap intervals for CKA matrices, vectorised over all layer pairs.

Permutation test (Gretton et al. 2008, the HSIC independence test). H0: the two representations
of a sample are independent, i.e. which row of model 2 belongs to which row of model 1 carries no
information. The statistic is the HSIC numerator summed over batches; the samples of one side
(the side with fewer layers, the same permutation for all of its layers) are permuted *within
each batch*, K times, and for a permutation P, ``HSIC(K, P L P^T)`` uses the permuted Gram at no
extra Gram cost. The self terms do not change under a permutation, so comparing numerators is
comparing CKA values. The p-value is ``(1 + #{null >= observed}) / (K + 1)``: never 0, at least
``1/(K+1)``, valid (exact under H0 for exchangeable samples) at any K. A layer against itself or
any strongly related layer gets the minimum ``1/(K+1)``; independent representations get
p-values that are uniform on {1/(K+1), ..., 1}. For whole-data measures (``cka``,
``cka_debiased``) the one batch is the whole data set.

Bootstrap interval (percentile method, level ``ci``):

- ``cka_minibatch``: the *batches* are resampled with replacement (their HSIC terms are
  re-weighted by how often each batch was drawn), i.e. a block bootstrap whose blocks are the
  minibatches. Resampling samples inside a batch would put duplicates into the unbiased HSIC,
  whose U-statistic assumes distinct samples (a duplicate pair acts like a diagonal term and
  biases it upwards); whole batches have no such problem. Needs >= 2 batches, and the batches
  should be exchangeable (an unshuffled loader sorted by class is not).
- ``cka`` (biased HSIC, whole data): the *samples* are resampled with replacement and the
  resampled Grams re-centred, the standard bootstrap of a V-statistic. Duplicates make a
  replicate behave like fewer distinct samples, and biased CKA grows as N shrinks, so the
  interval sits slightly above the estimate for weakly related layers (the estimate's own bias).
- ``cka_debiased``: not offered, for the reason above (use one of the other two).

All random draws come from a CPU ``torch.Generator`` (seeded by the caller) and are moved to the
data's device, so results do not depend on the device.
"""
import warnings
from typing import Optional, Tuple

import numpy as np
import torch

from src.similarity.gram import double_center_

#: float64 elements per temporary block of permuted Grams (64 MiB).
BLOCK_ELEMS = 1 << 23


def random_permutations(k: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``k x n`` int64: each row a uniformly random permutation of 0..n-1."""
    return torch.rand(k, n, generator=generator, dtype=torch.float64).argsort(dim=1)


def pair_index(perms: torch.Tensor, n: int) -> torch.Tensor:
    """Flat indices ``(k, n*n)`` that permute the rows and columns of a flattened n x n matrix."""
    return (perms[:, :, None] * n + perms[:, None, :]).reshape(perms.shape[0], n * n)


def permuted_cross(f1: torch.Tensor, f2: torch.Tensor, n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``(k, L1, L2)``: the cross terms ``<F1_a, P F2_b P^T>`` for k random permutations P.

    ``f1``, ``f2``: prepared stacks ``(L, n*n)`` (see :mod:`src.similarity.layer_pairs`). The side with
    fewer layers is permuted; the permuted copies are built in blocks of about BLOCK_ELEMS.
    """
    permute_first = f1.shape[0] < f2.shape[0]
    moved, fixed = (f1, f2) if permute_first else (f2, f1)
    layers = moved.shape[0]
    perms = random_permutations(k, n, generator)
    out = torch.empty(k, f1.shape[0], f2.shape[0], dtype=f1.dtype, device=f1.device)
    step = max(1, BLOCK_ELEMS // max(1, layers * n * n))
    for start in range(0, k, step):
        index = pair_index(perms[start:start + step], n).to(f1.device)
        kc = index.shape[0]
        permuted = moved[:, index].reshape(layers * kc, n * n)  # (layers, kc, n*n) -> rows
        prod = (fixed @ permuted.T).reshape(fixed.shape[0], layers, kc)  # fixed x moved x perm
        if permute_first:
            out[start:start + kc] = prod.permute(2, 1, 0)  # perm x moved(=L1) x fixed(=L2)
        else:
            out[start:start + kc] = prod.permute(2, 0, 1)  # perm x fixed(=L1) x moved(=L2)
    return out


def permutation_pvalues(cross: torch.Tensor, null: torch.Tensor, self1: torch.Tensor,
                        self2: torch.Tensor) -> np.ndarray:
    """One-sided p-values ``(1 + #{null >= observed}) / (K + 1)`` for every pair (numpy ``L1 x L2``).

    Compared on the CKA scale; a null value within 1e-12 of the observed one counts as a tie
    (rounding of mathematically equal sums must not decide a p-value).
    """
    denom = torch.sqrt(self1[:, None] * self2[None, :])
    observed = cross / denom
    null_cka = null / denom
    count = (null_cka >= observed - 1e-12).sum(dim=0)
    return ((1.0 + count.to(torch.float64)) / (null.shape[0] + 1)).cpu().numpy()


def _multinomial_weights(k: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``k x n`` float64 counts: how often each of n units is drawn in each of k resamples of size n."""
    draws = torch.randint(n, (k, n), generator=generator)
    return torch.zeros(k, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(k, n, dtype=torch.float64))


def batch_bootstrap(cross: torch.Tensor, self1: torch.Tensor, self2: torch.Tensor, k: int,
                    generator: torch.Generator) -> torch.Tensor:
    """``(k, L1, L2)`` CKA replicates from per-batch HSIC terms resampled with replacement.

    ``cross``: ``(B, L1, L2)``, ``self1``: ``(B, L1)``, ``self2``: ``(B, L2)`` (B batches). All
    replicates come from three matrix products with the ``k x B`` weight matrix. A replicate whose
    self terms are not positive gives NaN (left out of the interval).
    """
    b, l1, l2 = cross.shape
    weights = _multinomial_weights(k, b, generator).to(cross.device)
    num = (weights @ cross.reshape(b, l1 * l2)).reshape(k, l1, l2)
    s1, s2 = weights @ self1, weights @ self2
    denom = torch.sqrt((s1[:, :, None] * s2[:, None, :]).clamp_min(0))
    return torch.where(denom > 0, num / denom, torch.full_like(num, float("nan")))


def _recentered(flat: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    return double_center_(flat[:, index].reshape(flat.shape[0], n, n)).reshape(flat.shape[0], n * n)


def sample_bootstrap(f1: torch.Tensor, f2: Optional[torch.Tensor], k: int, generator: torch.Generator) -> torch.Tensor:
    """``(k, L1, L2)`` biased-CKA replicates from the samples resampled with replacement.

    ``f1``, ``f2``: flattened double-centred Gram stacks ``(L, n*n)`` of the whole data
    (``f2=None``: the same as ``f1``). For a resample ``idx`` the centred Gram of the resampled
    data is ``H K[idx, idx] H``; all layer pairs of one replicate take one matrix product.
    """
    n = int(round(f1.shape[1] ** 0.5))
    out = torch.empty(k, f1.shape[0], (f1 if f2 is None else f2).shape[0], dtype=f1.dtype, device=f1.device)
    for r in range(k):
        draw = torch.randint(n, (n,), generator=generator)
        index = (draw[:, None] * n + draw[None, :]).reshape(-1).to(f1.device)
        g1 = _recentered(f1, index, n)
        g2 = None if f2 is None else _recentered(f2, index, n)
        s1 = torch.linalg.vecdot(g1, g1)
        if g2 is None:
            cross, s2 = g1 @ g1.T, s1
        else:
            cross, s2 = g1 @ g2.T, torch.linalg.vecdot(g2, g2)
        out[r] = cross / torch.sqrt(s1[:, None] * s2[None, :])
    return out


def percentile_interval(replicates: torch.Tensor, level: float) -> Tuple[np.ndarray, np.ndarray]:
    """The ``(1 - level)/2`` and ``(1 + level)/2`` quantiles over the first axis (NaNs ignored)."""
    values = replicates.cpu().numpy()
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():  # a degenerate cell (a constant layer) has only NaN replicates: NaN bounds
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanquantile(values, alpha, axis=0)
        high = np.nanquantile(values, 1.0 - alpha, axis=0)
    return low, high
