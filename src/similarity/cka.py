"""Centred kernel alignment: linear (biased and debiased), RBF, minibatch and deconfounded.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for Gram matrices K (of X) and L (of Y). The two
HSIC estimators (biased, unbiased) are implemented once, in :mod:`src.similarity.hsic`; this module
applies them to one pair of representations.

Linear kernels are evaluated in whichever form is cheaper (``method="auto"``) or as forced:

- Gram form: the engine of the layer x layer matrices (:class:`src.similarity.hsic.HSICMatrix`)
  applied to the one pair, so a single-pair value equals the matrix engine's entry exactly.
- feature form: <K, L>_F = ||Yc^T Xc||_F^2 (D_x x D_y), no N x N matrix at all.

Both give the same number up to rounding. Precision follows the data: float64 data are multiplied
in float64; float32 (or narrower) data are centred with float64 column means and multiplied in
float32, with every sum of products in float64 (an offset of the features never reaches a product;
about 2x faster on CPUs). Results are plain Python floats and are never clamped: a debiased value
may be slightly negative and any value may exceed 1 by rounding.
"""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from src.errors import UserError
from src.similarity import _prep
from src.similarity._prep import (DegenerateMeasure, as_float, center64, check_degenerate, check_method, measure_pair,
                                  pair, use_feature_form)
from src.similarity.gram import sample_mean
from src.similarity.hsic import (BIASED, UNBIASED, HSICEstimator, HSICMatrix, Terms, minibatch_slices, ratio, sq_fro,
                                 sq_fro_gram_t)

BLOCK_ELEMS = 1 << 23  # float64 elements per temporary block (64 MiB)


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------

def centered_gram(x: torch.Tensor) -> torch.Tensor:
    """Float64 linear Gram ``Xc Xc^T`` of the centred rows of an ``N x D`` tensor.

    The data are converted and centred one block of columns at a time (column means in float64),
    so only ~N^2 + BLOCK_ELEMS doubles are held even for very wide layers. The result is
    doubly centred (rows and columns sum to ~0), i.e. already equal to H K H.
    """
    n, d = x.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    step = max(1, BLOCK_ELEMS // max(n, 1))
    for j in range(0, d, step):
        block = x[:, j:j + step].to(torch.float64)
        block = block - block.mean(dim=0, keepdim=True)
        gram.addmm_(block, block.T)
    return gram


def _unit_gram(x: torch.Tensor) -> torch.Tensor:
    k = centered_gram(x)
    return k / torch.trace(k)  # trace = ||Xc||_F^2 > 0 for a non-constant representation


def product_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64 or not floating point (integers are exact), else float32."""
    exact = any(t.dtype == torch.float64 or not t.is_floating_point() for t in tensors)
    return torch.float64 if exact else torch.float32


def centred(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` (``... x n x D``) with its columns centred (over the sample axis -2), in ``dtype``.

    float64: minus the float64 column means. float32, in two passes that never form a float64 copy:
    first minus the mean of a few evenly spaced samples (:func:`src.similarity.gram.centered_rows`'s
    shift: a value of the data's own range, so an offset cancels there, exactly where it dominates,
    and what is left is of the order of the features' spread), then minus the mean of that residual
    (:func:`column_mean`, float32 sums of at most 256 rows added in float64). What remains of an
    offset is then about 1e-5 of the spread, not of the offset; its effect on the HSIC terms is its
    square.
    """
    if dtype == torch.float64:
        mean = t.sum(dim=-2, keepdim=True, dtype=torch.float64) / t.shape[-2]
        return t.to(torch.float64) - mean
    rows = t.to(dtype)
    out = rows - sample_mean(rows)
    return out.sub_(column_mean(out))


def column_mean(x: torch.Tensor, block: int = 256) -> torch.Tensor:
    """Mean over axis -2 of ``... x n x D``, ``(..., 1, D)`` in ``x``'s dtype: matrix-vector sums of
    ``block`` rows in ``x``'s dtype (relative error below ``block`` units of rounding), their total in
    float64. Several times faster on CPUs than a float64 reduction over the sample axis."""
    n = x.shape[-2]
    total = None
    for start in range(0, n, block):
        part = x[..., start:start + block, :]
        ones = torch.ones(part.shape[-2], dtype=x.dtype, device=x.device)
        partial = (ones @ part).unsqueeze(-2).to(torch.float64)
        total = partial if total is None else total.add_(partial)
    return (total / n).to(x.dtype)


def linear_terms(xf: torch.Tensor, yf: torch.Tensor, estimator: HSICEstimator, method: str = "auto") -> Terms:
    """(HSIC(K,L), HSIC(K,K), HSIC(L,L)) of one pair of ``N x D`` matrices with linear kernels: the
    estimator's feature form (data scaled to unit Frobenius norm), or the matrix engine on one pair."""
    dtype = product_dtype(xf, yf)
    if use_feature_form(xf.shape[0], (xf.shape[1], yf.shape[1]), method):
        xc, yc = _prep.unit_frobenius(centred(xf, dtype)), _prep.unit_frobenius(centred(yf, dtype))
        return estimator.feature_terms(xc, yc)
    acc = HSICMatrix(estimator, precision=dtype, device=xf.device).update([xf], [yf])
    return acc.cross[0, 0], acc.self1[0], acc.self2[0]


def _ratio(kl, kk, ll) -> float:
    return as_float(ratio(kl, kk, ll))


def _debiased_ratio(hkl, hkk, hll, measure: str = "cka_debiased") -> float:
    if not (float(hkk) > 0 and float(hll) > 0):
        raise DegenerateMeasure(measure, f"the unbiased HSIC estimate of a representation with itself is not positive "
                                         f"(HSIC(K,K)={float(hkk):.3g}, HSIC(L,L)={float(hll):.3g}), so the ratio is "
                                         f"undefined", "more samples")
    return _ratio(hkl, hkk, hll)


# ---------------------------------------------------------------------------------------------
# linear CKA
# ---------------------------------------------------------------------------------------------

def cka(x, y, method: str = "auto") -> float:
    """Linear CKA with the biased HSIC on the full data (Kornblith et al. 2019).

    ``<Kc, Lc> / (||Kc|| ||Lc||)`` with Kc, Lc the centred linear Grams, i.e.
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``. ``method``: ``"auto"`` (cheaper form),
    ``"gram"`` or ``"feature"``. Invariant to orthogonal maps, isotropic scaling and translation
    of either argument. Known positive bias for finite N (about D/(N+D) for independent data);
    see :func:`cka_debiased`. Fewer than 3 samples (with 2 it is 1 whatever the data) or a constant
    representation is a :class:`src.similarity._prep.DegenerateMeasure`.
    """
    return cka_against([x], y, method)[0]


def cka_against(xs: Sequence, y, method: str = "auto") -> List[float]:
    """``[cka(x, y) for x in xs]`` (:func:`cka` is this with one ``x``), with ``y``'s side (its centred
    data and HSIC with itself, or its prepared Gram) computed once instead of once per ``x`` (a stitch
    compares three representations with the end network's). Each pair takes the cheaper form for its widths.
    A degenerate pair raises :class:`src.similarity._prep.DegenerateMeasure` (see :func:`cka_against_cells`)."""
    return [value for value, _ in cka_against_cells(xs, y, method, raise_degenerate=True)]


def cka_against_cells(xs: Sequence, y, method: str = "auto",
                      raise_degenerate: bool = False) -> List[Tuple[float, Optional[str]]]:
    """:func:`cka_against` as ``(value, None)`` per ``x``, or ``(nan, reason)`` for a degenerate pair
    (too few samples, a constant side): for results that store NaN with the reason beside it."""
    memo: Dict[Any, Any] = {}
    out: List[Tuple[float, Optional[str]]] = []
    for x in xs:
        try:
            xf, yf = measure_pair(x, y, "cka")
        except DegenerateMeasure as err:
            if raise_degenerate:
                raise
            out.append((math.nan, err.reason))
            continue
        dtype = product_dtype(xf, yf)
        if use_feature_form(xf.shape[0], (xf.shape[1], yf.shape[1]), method):
            if ("feature", dtype) not in memo:
                yc = _prep.unit_frobenius(centred(yf, dtype))
                memo[("feature", dtype)] = yc, sq_fro_gram_t(yc)
            yc, ll = memo[("feature", dtype)]
            xc = _prep.unit_frobenius(centred(xf, dtype))
            n2 = float(xc.shape[-2]) ** 2
            out.append((_ratio(sq_fro(yc.mT @ xc) / n2, sq_fro_gram_t(xc) / n2, ll / n2), None))
            continue
        acc = HSICMatrix(BIASED, precision=dtype, device=xf.device)
        if ("gram", dtype) not in memo:
            memo[("gram", dtype)] = acc.prepared([yf])
        acc.update_prepared(acc.prepared([xf]), memo[("gram", dtype)], xf.shape[0])
        out.append((_ratio(acc.cross[0, 0], acc.self1[0], acc.self2[0]), None))
    return out


def cka_debiased(x, y, method: str = "auto") -> float:
    """Linear CKA with the unbiased HSIC estimator (Song et al. 2012), as in Nguyen et al. 2021.

    Near 0 for independent data (no finite-sample bias), 1 for identical representations, may be
    slightly negative. Needs N >= 4; fewer samples, a constant representation or an estimate of
    HSIC(K,K) that is not positive (tiny N) is a :class:`src.similarity._prep.DegenerateMeasure`.
    """
    xf, yf = measure_pair(x, y, "cka_debiased")
    return _debiased_ratio(*linear_terms(xf, yf, UNBIASED, method))


# ---------------------------------------------------------------------------------------------
# minibatch CKA (Nguyen et al. 2021)
# ---------------------------------------------------------------------------------------------

class MinibatchCKA:
    """Streaming linear CKA of Nguyen et al. (2021).

    Each :meth:`update` adds one batch's unbiased HSIC(K,L), HSIC(K,K), HSIC(L,L) (Song et al.,
    batch centred first); :meth:`value` is ``sum HSIC_KL / sqrt(sum HSIC_KK * sum HSIC_LL)`` over the
    batches (the ratio of the unweighted means of the paper). Batches need >= 4 samples. The
    sums are kept by the matrix engine (:class:`src.similarity.hsic.HSICMatrix`, 1 x 1) on the
    batches' device until :meth:`value`, so updating never synchronises a GPU.
    """

    def __init__(self, method: str = "auto"):
        self.method = check_method(method)
        self.reset()

    def reset(self) -> None:
        self._acc: Optional[HSICMatrix] = None
        self.batches = 0

    def _engine(self, *tensors: torch.Tensor) -> HSICMatrix:
        if self._acc is None:
            self._acc = HSICMatrix(UNBIASED, precision=product_dtype(*tensors), device=tensors[0].device)
        return self._acc

    def _add_batches(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """``xb``: B x n x D_x, ``yb``: B x n x D_y (B batches of n >= 4 samples, raw dtype)."""
        acc = self._engine(xb, yb)
        n = xb.shape[-2]
        if use_feature_form(n, (xb.shape[-1], yb.shape[-1]), self.method):
            kl, kk, ll = UNBIASED.feature_terms(centred(xb, acc.dtype), centred(yb, acc.dtype))
            acc.add_terms(kl.sum().reshape(1, 1), kk.sum().reshape(1), ll.sum().reshape(1), n * xb.shape[0])
        else:
            for xi, yi in zip(xb, yb):
                acc.update([xi], [yi])
        self.batches += xb.shape[0]

    def update(self, x_batch, y_batch) -> "MinibatchCKA":
        """Add one batch (``N_b x ...`` each, same N_b >= 4; flattened per sample)."""
        xf, yf = pair(x_batch, y_batch, names=("x_batch", "y_batch"), min_n=4,
                      measure="a minibatch CKA batch (unbiased HSIC)")
        self._add_batches(xf.unsqueeze(0), yf.unsqueeze(0))
        return self

    def value(self) -> float:
        if self._acc is None:
            raise UserError("MinibatchCKA.value() called before any update()")
        acc = self._acc
        return _debiased_ratio(acc.cross[0, 0], acc.self1[0], acc.self2[0], "cka_minibatch")


def cka_minibatch(x, y, batch_size: int = 256, method: str = "auto") -> float:
    """Minibatch CKA (Nguyen et al. 2021) over consecutive batches of ``batch_size`` samples.

    The data are split in order (no shuffling) into batches of ``batch_size``; a final remainder of
    fewer than 4 samples (too few for the unbiased HSIC) is merged into the preceding batch, and
    when N <= batch_size the whole data is one batch, so the result then equals
    :func:`cka_debiased`. In the feature form, full batches are evaluated together as a batched
    tensor op; in the Gram form each batch goes through the matrix engine, as in
    :func:`src.similarity.cka_matrix`.
    """
    minibatch_slices(0, batch_size)  # a bad batch_size is an option error, before the data are looked at
    xf, yf = measure_pair(x, y, "cka_minibatch")
    parts = minibatch_slices(xf.shape[0], batch_size)
    acc = MinibatchCKA(method)
    size = parts[0].stop - parts[0].start
    full = sum(1 for part in parts if part.stop - part.start == size)
    # evaluate the regular batches in groups that keep the float64 temporaries ~BLOCK_ELEMS
    group = max(1, BLOCK_ELEMS // (size * (xf.shape[1] + yf.shape[1])))
    for start in range(0, full, group):
        stop = min(full, start + group)
        rows = slice(start * size, stop * size)
        acc._add_batches(xf[rows].reshape(stop - start, size, -1), yf[rows].reshape(stop - start, size, -1))
    for part in parts[full:]:
        acc._add_batches(xf[part].unsqueeze(0), yf[part].unsqueeze(0))
    return acc.value()


# ---------------------------------------------------------------------------------------------
# RBF CKA
# ---------------------------------------------------------------------------------------------

def _median_offdiag_distance(sq: torch.Tensor) -> torch.Tensor:
    """Median Euclidean distance over the pairs i != j of a squared-distance matrix (zero diagonal).

    The multiset of off-diagonal entries is every pair twice, so its median is the pairs' median.
    The n zeros of the diagonal are the n smallest entries, so the k-th smallest off-diagonal
    entry is the (n + k)-th smallest entry of the whole matrix (no copy of the triangle needed).
    For the even count n(n-1) the two middle distances are averaged.
    """
    n = sq.shape[0]
    flat = sq.reshape(-1)
    m = n * (n - 1)
    lo = flat.kthvalue(n + m // 2).values
    hi = flat.kthvalue(n + m // 2 + 1).values
    return (lo.sqrt() + hi.sqrt()) / 2


def rbf_gram(x: torch.Tensor, sigma_frac: float = 0.8, name: str = "x") -> torch.Tensor:
    """RBF Gram ``exp(-|x_i - x_j|^2 / (2 sigma^2))``, sigma = sigma_frac * median pairwise distance.

    Squared distances come from the float64 centred linear Gram (centring does not change
    distances but keeps the expansion |a|^2 + |b|^2 - 2 a.b accurate); rounding negatives are set
    to 0 and the diagonal to exactly 0.
    """
    g = centered_gram(x)
    d = g.diagonal().clone()
    sq = g.mul_(-2).add_(d.unsqueeze(0)).add_(d.unsqueeze(1)).clamp_min_(0)
    sq.fill_diagonal_(0)
    median = _median_offdiag_distance(sq)
    if not float(median) > 0:
        raise DegenerateMeasure("cka_rbf", f"the median pairwise distance of {name} is 0 (more than half of its "
                                           f"samples coincide), so the RBF bandwidth is undefined",
                                "more (distinct) samples or another layer")
    sigma = sigma_frac * median
    return sq.div_(-2 * sigma * sigma).exp_()


def cka_rbf(x, y, sigma_frac: float = 0.8, debiased: bool = False) -> float:
    """CKA with Gaussian (RBF) kernels (Kornblith et al. 2019, their sigma = fraction x median).

    Bandwidth: each representation gets its own ``sigma = sigma_frac * median_{i<j} |x_i - x_j|``
    (median over the N(N-1)/2 distinct pairs; Kornblith's reference code takes the median of
    the squared distances including the N zero diagonal entries, which is slightly smaller).
    Biased HSIC on double-centred Grams by default; ``debiased=True`` uses the unbiased HSIC
    (N >= 4). Always the Gram form (O(N^2) memory). Invariant to orthogonal maps, isotropic
    scaling (the bandwidth scales along) and translation.
    """
    if not sigma_frac > 0:
        raise UserError(f"sigma_frac must be positive, got {sigma_frac}")
    xf, yf = measure_pair(x, y, "cka_rbf", min_samples=UNBIASED.min_n if debiased else None)
    estimator = UNBIASED if debiased else BIASED
    f = estimator.prepare_(torch.stack([rbf_gram(xf, sigma_frac, "x"), rbf_gram(yf, sigma_frac, "y")]))
    (kk, kl), (_, ll) = f @ f.T
    if debiased:
        return _debiased_ratio(kl, kk, ll, "cka_rbf")
    return _ratio(kl, kk, ll)


# ---------------------------------------------------------------------------------------------
# deconfounded CKA (Cui et al. 2022)
# ---------------------------------------------------------------------------------------------

CONFOUNDED_RTOL = 1e-10


def dcka(x, y, inputs=None, method: str = "auto") -> float:
    """Deconfounded linear CKA (Cui et al. 2022): the input similarity is regressed out first.

    As in the paper (and its reference implementation): each representation's linear Gram K is
    regressed by ordinary least squares, with an intercept, on the input Gram K0 over all N^2
    entries; the residual ``K - alpha K0`` is the deconfounded Gram, and CKA (biased HSIC,
    centred) is taken between the two residuals. Here all data are centred first, so every Gram
    has zero mean entry and the fit reduces to ``alpha = <K, K0> / <K0, K0>`` with intercept 0
    (and the residual stays double-centred). The residual is not projected onto the PSD cone.
    With Frobenius inner products this gives, for either form (Gram / feature, like :func:`cka`),

        dCKA = (<K,L> - <K,K0><L,K0>/<K0,K0>) / sqrt((<K,K> - <K,K0>^2/<K0,K0>)(<L,L> - <L,K0>^2/<K0,K0>)).

    ``inputs`` (N x ..., the network inputs, flattened per sample) is required. A representation
    whose Gram is (numerically) a multiple of the input Gram has no deconfounded part, a
    :class:`src.similarity._prep.DegenerateMeasure` (as are fewer than 3 samples and constant data).
    """
    if inputs is None:
        raise UserError("dcka needs the network inputs: pass inputs=<the N input samples> "
                        "(the input similarity is what gets regressed out)")
    xf, yf = pair(x, y, measure="dcka")
    zf = _prep.extra(inputs, xf.shape[0], xf.device, "inputs", xf)
    check_degenerate("dcka", xf.shape[0], constant=_prep.constant_names([("x", xf), ("y", yf), ("inputs", zf)]))
    dims = (xf.shape[1], yf.shape[1], zf.shape[1])
    if use_feature_form(xf.shape[0], dims, method):
        xc, yc, zc = (_prep.unit_frobenius(center64(t)) for t in (xf, yf, zf))
        kl, kk, ll = sq_fro(yc.T @ xc), sq_fro_gram_t(xc), sq_fro_gram_t(yc)
        k0, l0, z0 = sq_fro(zc.T @ xc), sq_fro(zc.T @ yc), sq_fro_gram_t(zc)
    else:
        f = BIASED.prepare_(torch.stack([_unit_gram(xf), _unit_gram(yf), _unit_gram(zf)]))
        (kk, kl, k0), (_, ll, l0), (_, _, z0) = (f @ f.T).unbind()
    num = kl - k0 * l0 / z0
    rk, rl = kk - k0 * k0 / z0, ll - l0 * l0 / z0
    for name, resid, scale in (("x", rk, kk), ("y", rl, ll)):
        if not float(resid) > CONFOUNDED_RTOL * float(scale):
            raise DegenerateMeasure("dcka", f"the similarity structure of {name} is entirely explained by the "
                                            f"inputs' (its Gram is a multiple of the input Gram), so dCKA is 0/0",
                                    "another layer, or cka")
    return as_float(num / torch.sqrt(rk * rl))

