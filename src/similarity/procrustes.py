"""Orthogonal Procrustes distance between representations.

Convention: X and Y are centred (float64 column means) and scaled to unit Frobenius norm, X^, Y^.
The returned value is the *squared* Procrustes distance

    d = min_Q ||X^ - Y^ Q||_F^2 = 2 - 2 ||X^^T Y^||_*        (in [0, 2])

(Ding et al. 2021's convention; ||.||_* is the nuclear norm). Q ranges over orthogonal maps;
different widths D_x != D_y are allowed: padding the narrower side with zero columns does not
change ||X^^T Y^||_*, so the formula is the distance after zero-padding. d = 0 exactly when
Y = c X Q + v (c > 0, Q orthogonal, v a constant row). The angular metric of Williams et al. 2021 is
``arccos(1 - d/2)``; ``sqrt(d)`` is the plain Procrustes metric. The value is not clamped: a
perfect match may give ~-1e-16.

Degenerate data (a :class:`src.similarity._prep.DegenerateMeasure`): the distance compares the shapes
of two N-point configurations, and with N = 2 any two are similar (d = 0 whatever the data), so it
needs N >= 3; a constant representation (0/0) is refused too. Wide layers (D >= N) are not
degenerate here: d depends on the data through the two N x N Gram matrices (though for D >> N random
configurations concentrate near regular simplices and d shrinks towards 0).
"""
import torch

from src.similarity._prep import as_float, center64, measure_pair, unit_frobenius, use_feature_form


def nuclear_cross(xc: torch.Tensor, yc: torch.Tensor, feature: bool) -> torch.Tensor:
    """``||Xc^T Yc||_*`` either from the D_x x D_y product (feature form) or from the thin SVDs of
    the data (Gram form: Xc = Ux Sx Vx^T gives ``||Xc^T Yc||_* = ||(Ux Sx)^T (Uy Sy)||_*``, an at
    most N x N matrix)."""
    if feature:
        return torch.linalg.svdvals(xc.T @ yc).sum()
    ux, sx, _ = torch.linalg.svd(xc, full_matrices=False)
    uy, sy, _ = torch.linalg.svd(yc, full_matrices=False)
    return torch.linalg.svdvals((ux * sx).T @ (uy * sy)).sum()


def procrustes(x, y, method: str = "auto") -> float:
    """Squared orthogonal Procrustes distance ``2 - 2 ||X^^T Y^||_*`` in [0, 2] (see module notes).

    ``method``: ``"feature"`` (SVD of the D_x x D_y cross product), ``"gram"`` (SVDs of the two
    N x D data matrices, cheaper when D >> N) or ``"auto"``. Symmetric; fewer than 3 samples or a
    constant representation is a DegenerateMeasure.
    """
    xf, yf = measure_pair(x, y, "procrustes")
    n, dx, dy = xf.shape[0], xf.shape[1], yf.shape[1]
    if method == "auto":
        feature_cost = dx * dy * (n + min(dx, dy))
        gram_cost = n * (dx * min(n, dx) + dy * min(n, dy)) + min(n, dx) * min(n, dy) * min(n, dx, dy)
        feature = feature_cost <= gram_cost
    else:
        feature = use_feature_form(n, (dx, dy), method)
    xc, yc = unit_frobenius(center64(xf)), unit_frobenius(center64(yf))
    return as_float(2 - 2 * nuclear_cross(xc, yc, feature))
