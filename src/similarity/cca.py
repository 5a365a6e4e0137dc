"""Canonical correlation analysis and its variants: R^2_CCA, mean rho, SVCCA, PWCCA.

Canonical correlations are computed from orthonormal bases of the column spaces of the centred
data: with Xc = Ux Sx Vx^T (thin SVD, float64), the canonical correlations are the singular values
of ``Ux^T Uy``. This never inverts a covariance matrix, so it is accurate for ill-conditioned data.

Rank: singular values of a centred representation below ``s_max * rtol`` are treated as zero
(duplicate or dead neurons, D >= N, dependencies computed in float32). By default
``rtol = max(N, D) * eps64`` for float64 data (numpy's ``matrix_rank`` rule) and 1e-5 for float32
data (its rounding noise level); the ``rtol`` keyword overrides it. There are
``k = min(rank_x, rank_y)`` canonical correlations and the averages are over these k.

Degenerate data (a :class:`src.similarity._prep.DegenerateMeasure`, never a number): centred data
lie in the (N - 1)-dimensional space orthogonal to the ones vector, so two column spaces of ranks
r_x and r_y share at least ``r_x + r_y - (N - 1)`` dimensions, each a canonical correlation of exactly
1 whatever the data. :func:`cca`, :func:`cca_mean_rho` and :func:`pwcca` therefore refuse when
``r_x + r_y > N - 1`` (with r_x = N - 1, e.g. D >= N - 1 generic features, every correlation is 1: the
known overfitting of CCA when D is not much smaller than N), :func:`svcca` when the directions it keeps
do; fewer than 3 samples and constant representations are refused too. Below that the values are
data-dependent, with the known small-sample bias (independent Gaussian data: E[R^2_CCA] =
max(r_x, r_y) / (N - 1)). :func:`canonical_correlations` returns the correlations as they are, forced
ones included. Results are never clamped (a correlation may exceed 1 by ~1e-15).
"""
from typing import Optional

import torch

from src.errors import UserError
from src.similarity._prep import (as_float, center64, check_degenerate, measure_pair, pair, require_varies,
                                  rtol_or_default)


def _svd_centered(t: torch.Tensor):
    xc = center64(t)
    u, s, vh = torch.linalg.svd(xc, full_matrices=False)
    return xc, u, s


def _rank(s: torch.Tensor, rtol: float) -> int:
    return int((s > s[0] * rtol).sum()) if s.numel() else 0


def _bases(x, y, rtol: Optional[float], measure: Optional[str]):
    """Centred data, orthonormal bases of the column spaces and singular values of both sides.

    ``measure`` (a registry name): its degeneracy rules are applied (``None``: only N >= 2 and no
    constant side, for :func:`canonical_correlations`); ``svcca`` checks its ranks after the reduction."""
    if measure is None:
        xf, yf = pair(x, y, min_n=2, measure="CCA")
        require_varies(xf, "x", "CCA")
        require_varies(yf, "y", "CCA")
    else:
        xf, yf = measure_pair(x, y, measure)
    out = []
    for t in (xf, yf):
        xc, u, s = _svd_centered(t)
        r = _rank(s, rtol_or_default(rtol, t.shape[0], t.shape[1], t))
        out.append((xc, u[:, :r], s[:r]))
    if measure is not None and measure != "svcca":
        _check_ranks(measure, xf.shape[0], out[0][1].shape[1], out[1][1].shape[1], xf.shape[1], yf.shape[1])
    return out


def _check_ranks(measure: str, n: int, r_x: int, r_y: int, d_x: int, d_y: int) -> None:
    check_degenerate(measure, n, ranks=(r_x, r_y), widths=(d_x, d_y))


def canonical_correlations(x, y, rtol: Optional[float] = None) -> torch.Tensor:
    """The ``min(rank_x, rank_y)`` canonical correlations of the centred data, descending (float64).

    No degeneracy check: with ``rank_x + rank_y > N - 1`` the first ``rank_x + rank_y - (N - 1)`` of
    them are 1 by dimension counting (see the module notes)."""
    (_, ux, _), (_, uy, _) = _bases(x, y, rtol, None)
    return torch.linalg.svdvals(ux.T @ uy)


def cca(x, y, rtol: Optional[float] = None) -> float:
    """R^2_CCA: the mean squared canonical correlation, ``||Ux^T Uy||_F^2 / min(rank_x, rank_y)``.

    (Kornblith et al. 2019's R^2_CCA, with ranks in place of widths.) Invariant to any invertible
    linear map and translation of either argument. DegenerateMeasure when ``rank_x + rank_y > N - 1``
    (see the module notes).
    """
    (_, ux, _), (_, uy, _) = _bases(x, y, rtol, "cca")
    k = min(ux.shape[1], uy.shape[1])
    return as_float(torch.linalg.matrix_norm(ux.T @ uy).square() / k)


def cca_mean_rho(x, y, rtol: Optional[float] = None) -> float:
    """The mean canonical correlation (rho-bar of Raghu et al. 2017), ``||Ux^T Uy||_* / k``."""
    (_, ux, _), (_, uy, _) = _bases(x, y, rtol, "cca_mean_rho")
    k = min(ux.shape[1], uy.shape[1])
    return as_float(torch.linalg.svdvals(ux.T @ uy).sum() / k)


def _top_directions(u: torch.Tensor, s: torch.Tensor, keep: float) -> torch.Tensor:
    """The first k left singular vectors, k the fewest whose variance (s^2) reaches ``keep``."""
    var = s.square()
    frac = torch.cumsum(var, 0) / var.sum()
    k = min(int((frac < keep).sum()) + 1, s.numel())
    return u[:, :k]


def svcca(x, y, keep: float = 0.99, rtol: Optional[float] = None) -> float:
    """SVCCA (Raghu et al. 2017): mean canonical correlation after an SVD reduction of each side.

    Each centred representation keeps its top singular directions explaining a fraction ``keep``
    of its variance (the fewest such directions; never more than its numerical rank), then the
    mean CCA correlation of the reduced representations is returned. DegenerateMeasure when the kept
    directions k_x + k_y exceed N - 1 (some correlations would be 1 whatever the data; a smaller
    ``keep`` or more samples help).
    """
    if not 0 < keep <= 1:
        raise UserError(f"keep (the fraction of variance SVCCA keeps) must be in (0, 1], got {keep}")
    (xc, ux, sx), (yc, uy, sy) = _bases(x, y, rtol, "svcca")
    ux, uy = _top_directions(ux, sx, keep), _top_directions(uy, sy, keep)
    _check_ranks("svcca", xc.shape[0], ux.shape[1], uy.shape[1], xc.shape[1], yc.shape[1])
    k = min(ux.shape[1], uy.shape[1])
    return as_float(torch.linalg.svdvals(ux.T @ uy).sum() / k)


def pwcca(x, y, rtol: Optional[float] = None) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): ``sum_i alpha_i rho_i``.

    h_i = the i-th canonical variate of X (unit norm, N-vector), alpha_i proportional to
    ``sum_j |<h_i, x_j>|`` over the neurons x_j (columns of the centred X), normalised to sum 1.
    The weights come from the first argument, as in the paper's definition, so pwcca(x, y) !=
    pwcca(y, x) in general (the authors' code instead weights by whichever side has fewer
    neurons). Invariant to invertible linear maps and translation of y, and to scaling,
    translation, permutation and sign flips of the neurons of x, but not to rotations of x (the
    weights are L1 sums over x's neurons).
    """
    (xc, ux, _), (_, uy, _) = _bases(x, y, rtol, "pwcca")
    u, rho, _ = torch.linalg.svd(ux.T @ uy, full_matrices=False)
    k = min(ux.shape[1], uy.shape[1])
    h = ux @ u[:, :k]                      # canonical variates of x, N x k, orthonormal
    alpha = (xc.T @ h).abs().sum(dim=0)    # sum over neurons of |<h_i, x_j>|
    alpha = alpha / alpha.sum()
    return as_float((alpha * rho[:k]).sum())


__all__ = ["canonical_correlations", "cca", "cca_mean_rho", "svcca", "pwcca"]
