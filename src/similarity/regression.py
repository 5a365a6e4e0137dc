"""Linear regression between representations: the lr score and the closed-form stitching maps.

- :func:`lr` — R^2 of predicting Y from X (samples x flattened features, with intercept).
- :func:`ps_inv`, :func:`ls_orth`, :func:`ls_sum` — closed-form affine maps ``Y ~ X W^T + b`` in the
  layout of a 1x1 convolution (for feature maps pixels are samples, channels are features), as
  used to initialise a stitching layer. They return numpy float64 arrays ``{'w': (D_y, D_x),
  'b': (D_y,)}``.
- :class:`LeastSquaresFit` — the streaming accumulator behind the three maps: one global fit over
  all batches (never an average of per-batch fits).

Numerics of the maps: every batch is converted to float64 and centred on its own mean, its
co-moment matrices Xc^T Xc, Xc^T Yc, Yc^T Yc are formed, and batches are merged with the exact
pairwise update of Chan et al. (1979) (co-moments + n_a n_b / n * outer(mean difference)). So no
uncentred sums of squares are ever differenced, and a constant offset of the activations costs no
precision. The normal equations are solved with a pseudo-inverse: eigenvalues of the X covariance
below ``lambda_max * max(rtol^2, 16 D_x eps64)`` are treated as zero, i.e. singular values of
the centred X below ``rtol * s_max`` (rtol defaults as for CCA: ``max(N, D_x) * eps64`` for float64
data, 1e-5 for float32 data; the second term is the accuracy limit of the float64 eigensolver),
which gives the minimum-norm least squares solution. Rank-deficient X (duplicate or dead channels,
D_x > N) therefore gives finite weights, never NaN. The normal equations square the condition
number: directions of X weaker than ~1e-6 of the strongest are fitted to only a few digits (ample
for a stitching initialisation; :func:`lr` uses an SVD of the data instead). The one-shot
functions run the same accumulator over row chunks, so they equal the streaming fit over any
batching and hold at most a few tens of MiB of float64 temporaries.

Degenerate data: :func:`lr` refuses (a :class:`src.similarity._prep.DegenerateMeasure`) an X whose centred
rank reaches N - 1 (it predicts every Y exactly: R^2 = 1 whatever the data), a constant X or Y and
fewer than 3 samples; :meth:`LeastSquaresFit.r2` is NaN with a warning in the same case (rows of
pixels as samples). The maps themselves are still given (the minimum-norm solution).
"""
import warnings
from typing import Dict, Iterable, Optional

import numpy as np
import torch

from src.errors import UserError
from src.similarity._prep import (EPS64, FLOAT32_RTOL, DegenerateWarning, as_float, center64, check_degenerate,
                                  check_finite, degenerate_reason, input_eps, measure_pair, pixel_rows,
                                  rtol_or_default, shape_str, to_tensor)

BLOCK_ELEMS = 1 << 22  # float64 elements per row chunk of (X, Y)
DEFAULT_RANKS = (4, 8, 16)


# ---------------------------------------------------------------------------------------------
# the lr score
# ---------------------------------------------------------------------------------------------

def lr(x, y, rtol: Optional[float] = None) -> float:
    """R^2 of the least-squares prediction of Y from X with an intercept, pooled over Y's dimensions:

        1 - ||Y - X W - b||_F^2 / ||Y - mean(Y)||_F^2 = ||P_X Yc||_F^2 / ||Yc||_F^2

    (P_X = projection onto the column space of the centred X, from its thin SVD in float64; the
    rank tolerance is as in :mod:`src.similarity.cca`). Samples x flattened features. In-sample, so
    degenerate (a :class:`src.similarity._prep.DegenerateMeasure`, not 1.0) when the centred X has
    rank N - 1 (e.g. D_x >= N - 1): it then spans every centred direction and predicts any Y exactly.
    Fewer than 3 samples and a constant X or Y (R^2 fixed at 0, or 0/0) are degenerate too.
    """
    xf, yf = measure_pair(x, y, "lr")
    xc, yc = center64(xf), center64(yf)
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    r = int((s > s[0] * rtol_or_default(rtol, xf.shape[0], xf.shape[1], xf)).sum())
    check_degenerate("lr", xf.shape[0], ranks=(r,), widths=(xf.shape[1],))
    u = u[:, :r]
    return as_float(torch.linalg.matrix_norm(u.T @ yc).square() / torch.linalg.matrix_norm(yc).square())


# ---------------------------------------------------------------------------------------------
# streaming least squares
# ---------------------------------------------------------------------------------------------

def _weights(w: torch.Tensor, b: torch.Tensor) -> Dict[str, np.ndarray]:
    return {"w": w.detach().cpu().numpy(), "b": b.detach().cpu().numpy()}


class LeastSquaresFit:
    """Streaming affine least squares ``Y ~ X W^T + b`` (pixels as samples, channels as features).

    ``update(x_batch, y_batch)`` takes activations of one batch (``N x D`` or ``N x C x H x W``; both
    with the same N and, for feature maps, the same spatial size) and merges their float64
    centred co-moments into the running totals; ``solve()`` returns the global fit over everything
    seen, ``solve_orthogonal()`` the orthogonal (Procrustes) map, ``solve_reduced_rank(ranks)`` the
    reduced-rank fits, ``r2()`` the pooled R^2 of the fit. See the module notes for the numerics.
    """

    def __init__(self, rtol: Optional[float] = None):
        if rtol is not None and not 0 <= rtol < 1:
            raise UserError(f"rtol must be in [0, 1), got {rtol}")
        self.rtol = rtol
        self.n = 0
        self.low_precision = False  # any float32-or-narrower batch seen
        self.mean_x = self.mean_y = self.cxx = self.cxy = self.cyy = None
        self._pinv: Optional[torch.Tensor] = None  # of the co-moments as they are now; cleared by update()
        self._rank = 0  # numerical rank of the X co-moments, set with _pinv

    # -- accumulation --------------------------------------------------------------------------
    def _merge(self, xr: torch.Tensor, yr: torch.Tensor) -> None:
        self._pinv = None
        nb = xr.shape[0]
        xb, yb = xr.to(torch.float64), yr.to(torch.float64)
        mx, my = xb.mean(dim=0), yb.mean(dim=0)
        xb, yb = xb - mx, yb - my
        cxx, cxy, cyy = xb.T @ xb, xb.T @ yb, yb.T @ yb
        if self.n == 0:
            self.mean_x, self.mean_y, self.cxx, self.cxy, self.cyy = mx, my, cxx, cxy, cyy
            self.n = nb
            return
        n = self.n + nb
        dx, dy = mx - self.mean_x, my - self.mean_y
        f = self.n * nb / n
        self.cxx += cxx + f * torch.outer(dx, dx)
        self.cxy += cxy + f * torch.outer(dx, dy)
        self.cyy += cyy + f * torch.outer(dy, dy)
        self.mean_x += dx * (nb / n)
        self.mean_y += dy * (nb / n)
        self.n = n

    def update(self, x_batch, y_batch) -> "LeastSquaresFit":
        """Add one batch; returns ``self`` so that ``LeastSquaresFit().update(x, y).solve()`` works."""
        x_t, y_t = to_tensor(x_batch, "x_batch"), to_tensor(y_batch, "y_batch")
        if x_t.dim() == 0 or y_t.dim() == 0:
            raise UserError("activations must have a sample axis, got a scalar")
        per_x = int(np.prod(x_t.shape[2:])) if x_t.dim() > 2 else 1
        per_y = int(np.prod(y_t.shape[2:])) if y_t.dim() > 2 else 1
        if x_t.shape[0] != y_t.shape[0] or per_x != per_y:
            raise UserError("the closed-form map needs the same samples and the same spatial size on both "
                            f"sides (pixels are samples): x has shape {shape_str(x_t)}, y has shape {shape_str(y_t)}")
        dx = x_t.shape[1] if x_t.dim() > 1 else 1
        dy = y_t.shape[1] if y_t.dim() > 1 else 1
        if self.cxx is not None and (dx, dy) != (self.cxx.shape[0], self.cxy.shape[1]):
            raise UserError(f"batch has {dx} -> {dy} features but earlier batches had "
                            f"{self.cxx.shape[0]} -> {self.cxy.shape[1]} (shapes {shape_str(x_t)}, {shape_str(y_t)})")
        if x_t.shape[0] == 0:
            return self
        device = self.cxx.device if self.cxx is not None else x_t.device
        step = max(1, BLOCK_ELEMS // max(1, per_x * (dx + dy)))
        for s in range(0, x_t.shape[0], step):
            xr, yr = pixel_rows(x_t[s:s + step], "x_batch"), pixel_rows(y_t[s:s + step], "y_batch")
            check_finite(xr, "x_batch")
            check_finite(yr, "y_batch")
            self.low_precision |= input_eps(xr) > EPS64
            self._merge(xr.to(device), yr.to(device))
        return self

    # -- solutions -----------------------------------------------------------------------------
    def _require_data(self) -> None:
        if self.n == 0:
            raise UserError("LeastSquaresFit has no data: call update() with at least one batch first")

    def _pinv_xx(self) -> torch.Tensor:
        """Pseudo-inverse of the X co-moment matrix (symmetric eigendecomposition, see module notes); computed
        once for the data seen so far (a stitch asks for it up to three times: init, the least-squares stitch, R^2)."""
        if self._pinv is None:
            self._pinv = self._pinv_of_cxx()
        return self._pinv

    def _pinv_of_cxx(self) -> torch.Tensor:
        lam, vec = torch.linalg.eigh(self.cxx)
        d = self.cxx.shape[0]
        rtol = self.rtol
        if rtol is None:
            rtol = max(max(self.n, d) * EPS64, FLOAT32_RTOL if self.low_precision else 0.0)
        lam_max = lam[-1].clamp_min(0)
        keep = lam > lam_max * max(rtol * rtol, 16 * d * EPS64)
        self._rank = int(keep.sum())
        vk = vec[:, keep]
        return (vk / lam[keep]) @ vk.T

    def _wb(self, w: torch.Tensor):
        return w, self.mean_y - w @ self.mean_x

    def _w_full(self) -> torch.Tensor:
        return (self._pinv_xx() @ self.cxy).T  # (D_y, D_x)

    def solve(self) -> Dict[str, np.ndarray]:
        """Least squares with bias: ``{'w': (D_y, D_x), 'b': (D_y,)}`` (numpy float64)."""
        self._require_data()
        return _weights(*self._wb(self._w_full()))

    def solve_orthogonal(self) -> Dict[str, np.ndarray]:
        """Orthogonal map plus bias: ``W = U V^T`` from the SVD ``Yc^T Xc = U S V^T``.

        W maximises <Xc W^T, Yc> over (semi-)orthogonal W; b = mean_y - W mean_x. For
        D_y >= D_x (W^T W = I) this is the exact minimiser of ||X W^T + b - Y||^2; for D_y < D_x
        (W W^T = I) it is the standard Procrustes alignment (the exact constrained minimiser has no
        closed form there).
        """
        self._require_data()
        u, _, vh = torch.linalg.svd(self.cxy.T, full_matrices=False)
        return _weights(*self._wb(u @ vh))

    def solve_reduced_rank(self, ranks: Iterable[int] = DEFAULT_RANKS) -> Dict[int, Dict[str, np.ndarray]]:
        """Reduced-rank least squares: the full fit projected onto the top-r principal directions
        of its (centred) fitted values, for each r in ``ranks`` and for r = D_y (the full fit).

        ``W_r = V_r V_r^T W`` with V_r the top r eigenvectors of ``W Cxx W^T`` (the covariance of
        X W^T), ``b_r = mean_y - W_r mean_x``; the classical reduced-rank regression solution.
        Keys are the ranks (ints); ranks >= D_y give the full fit, which is also under key D_y.
        """
        self._require_data()
        w = self._w_full()
        dy = w.shape[0]
        fitted = w @ self.cxx @ w.T
        lam, vec = torch.linalg.eigh((fitted + fitted.T) / 2)
        vec = vec.flip(-1)  # descending
        out = {}
        for r in list(ranks) + [dy]:
            r = int(r)
            if r < 1:
                raise UserError(f"ranks must be positive integers, got {r}")
            if r >= dy:
                out[r] = _weights(*self._wb(w))
            else:
                v = vec[:, :r]
                out[r] = _weights(*self._wb(v @ (v.T @ w)))
        return out

    def correlation(self) -> np.ndarray:
        """Pearson correlations of every x feature with every y feature, ``(D_x, D_y)`` float64.

        The same co-moments as the fit; a feature with zero variance (a dead ReLU) correlates 0, not NaN.
        """
        self._require_data()
        sx, sy = self.cxx.diagonal().sqrt(), self.cyy.diagonal().sqrt()
        scale = torch.outer(sx, sy)
        out = torch.where(scale > 0, self.cxy / torch.where(scale > 0, scale, 1.0), 0.0)
        return out.cpu().numpy()

    def degenerate_reason(self) -> Optional[str]:
        """Why :meth:`r2` is degenerate on the data seen so far, or None: a constant Y (0/0), or X whose
        numerical rank (the pseudo-inverse's) reaches N - 1 rows, so that every Y is fitted exactly."""
        self._require_data()
        if not float(torch.trace(self.cyy)) > 0:
            return "y is constant across the rows (samples x pixels), so R^2 is 0/0"
        self._pinv_xx()
        found = degenerate_reason("least-squares R^2", self.n, ranks=(self._rank,), widths=(self.cxx.shape[0],))
        return None if found is None else found[0]

    def r2(self) -> float:
        """Pooled in-sample R^2 of the least-squares fit, from the accumulated co-moments.

        NaN, with a :class:`src.similarity._prep.DegenerateWarning` giving the reason, when it is
        degenerate (:meth:`degenerate_reason`): an R^2 of 1 that any Y would get is never reported."""
        reason = self.degenerate_reason()
        if reason is not None:
            warnings.warn(f"least-squares R^2 is degenerate here (stored as NaN): {reason}", DegenerateWarning,
                          stacklevel=2)
            return float("nan")
        explained = (self.cxy * (self._pinv_xx() @ self.cxy)).sum()
        return as_float(explained / torch.trace(self.cyy))


def _fit(x, y, rtol) -> LeastSquaresFit:
    return LeastSquaresFit(rtol=rtol).update(x, y)


def ps_inv(x, y, rtol: Optional[float] = None) -> Dict[str, np.ndarray]:
    """Least-squares affine map with bias (pseudo-inverse), ``min ||X W^T + b - Y||^2``.

    For feature maps (N x C x H x W) pixels are samples and channels features (a 1x1 conv);
    both sides need the same N and spatial size. Returns ``{'w': (D_y, D_x), 'b': (D_y,)}``
    (numpy float64). Same result as :class:`LeastSquaresFit` over any batching.
    """
    return _fit(x, y, rtol).solve()


def ls_orth(x, y) -> Dict[str, np.ndarray]:
    """Orthogonal (semi-orthogonal for different widths) map plus bias; see
    :meth:`LeastSquaresFit.solve_orthogonal`. Layout as :func:`ps_inv`."""
    return _fit(x, y, None).solve_orthogonal()


def ls_sum(x, y, ranks: Iterable[int] = DEFAULT_RANKS, rtol: Optional[float] = None
           ) -> Dict[int, Dict[str, np.ndarray]]:
    """Reduced-rank least squares at ranks 4, 8, 16 and full (key D_y, equal to :func:`ps_inv`);
    see :meth:`LeastSquaresFit.solve_reduced_rank`. Layout as :func:`ps_inv`."""
    return _fit(x, y, rtol).solve_reduced_rank(ranks)


__all__ = ["lr", "LeastSquaresFit", "ps_inv", "ls_orth", "ls_sum", "DEFAULT_RANKS"]
