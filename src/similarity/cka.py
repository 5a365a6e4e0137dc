"""Centred kernel alignment: linear (biased and debiased), RBF, minibatch and deconfounded.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for Gram matrices K (of X) and L (of Y).

Linear kernels are evaluated in whichever form is cheaper (``method="auto"``) or as forced:

- Gram form: K = Xc Xc^T (N x N, Xc = X centred in float64), <K, L>_F.
- feature form: <K, L>_F = ||Yc^T Xc||_F^2 (D_x x D_y), no N x N matrix at all.

Both give the same number (up to float64 rounding). The Gram form builds K from float64 column
blocks of the data, so its extra memory is ~N^2 doubles however wide the layer is. Results are
plain Python floats and are never clamped: a debiased value may be slightly negative and any value
may exceed 1 by rounding.
"""
from typing import Optional, Tuple

import torch

from src.errors import UserError
from src.similarity import _prep
from src.similarity._prep import as_float, center64, check_method, pair, require_varies, use_feature_form

BLOCK_ELEMS = 1 << 23  # float64 elements per temporary block (64 MiB)


# ---------------------------------------------------------------------------------------------
# building blocks (also used by the layer x layer matrices)
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


def _fro(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b>_F over the last two axes without an elementwise temporary."""
    a2, b2 = a.flatten(-2), b.flatten(-2)
    return (a2.unsqueeze(-2) @ b2.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def _sq_fro(a: torch.Tensor) -> torch.Tensor:
    return _fro(a, a)


def biased_terms_feature(xc: torch.Tensor, yc: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """(<K,L>, <K,K>, <L,L>) of centred data via D x D products (leading batch axes allowed)."""
    return (_sq_fro(yc.mT @ xc), _sq_fro(xc.mT @ xc), _sq_fro(yc.mT @ yc))


def biased_terms_gram(k: torch.Tensor, l: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """(<K,L>, <K,K>, <L,L>) of doubly centred Gram matrices."""
    return (_fro(k, l), _sq_fro(k), _sq_fro(l))


def _u_combine(n: int, tr, sum_k, sum_l, rows_dot):
    """Song et al. (2012) unbiased HSIC from its four ingredients (K~, L~ have zero diagonals).

    HSIC_1 = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)).
    """
    return (tr + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * rows_dot) / (n * (n - 3))


def unbiased_terms_gram(k: torch.Tensor, l: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Unbiased (HSIC(K,L), HSIC(K,K), HSIC(L,L)) from Gram matrices (modified in place: diagonal
    set to zero). Leading batch axes allowed. Needs n >= 4."""
    n = k.shape[-1]
    k.diagonal(dim1=-2, dim2=-1).zero_()
    l.diagonal(dim1=-2, dim2=-1).zero_()
    rk, rl = k.sum(-1), l.sum(-1)
    sk, sl = rk.sum(-1), rl.sum(-1)
    dot = lambda a, b: (a * b).sum(-1)  # noqa: E731
    return (_u_combine(n, _fro(k, l), sk, sl, dot(rk, rl)),
            _u_combine(n, _sq_fro(k), sk, sk, dot(rk, rk)),
            _u_combine(n, _sq_fro(l), sl, sl, dot(rl, rl)))


def unbiased_terms_feature(xc: torch.Tensor, yc: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """The same three unbiased HSICs for linear kernels without forming N x N matrices.

    With a_i = |x_i|^2 (the diagonal of K) and s = X^T 1:  tr(K~L~) = ||Y^T X||^2 - a.b,
    1'K~1 = |s|^2 - sum(a),  K~1 = X s - a.  (s is ~0 for centred data; it is kept so that the
    identity holds exactly for any input.)
    """
    n = xc.shape[-2]
    a, b = xc.square().sum(-1), yc.square().sum(-1)
    sx, sy = xc.sum(-2), yc.sum(-2)
    kx1 = (xc @ sx.unsqueeze(-1)).squeeze(-1) - a
    ly1 = (yc @ sy.unsqueeze(-1)).squeeze(-1) - b
    tk = sx.square().sum(-1) - a.sum(-1)
    tl = sy.square().sum(-1) - b.sum(-1)
    dot = lambda u, v: (u * v).sum(-1)  # noqa: E731
    kl, kk, ll = biased_terms_feature(xc, yc)
    return (_u_combine(n, kl - dot(a, b), tk, tl, dot(kx1, ly1)),
            _u_combine(n, kk - dot(a, a), tk, tk, dot(kx1, kx1)),
            _u_combine(n, ll - dot(b, b), tl, tl, dot(ly1, ly1)))


def _ratio(kl, kk, ll) -> float:
    return as_float(kl / torch.sqrt(kk * ll))


def _unit_gram(x: torch.Tensor) -> torch.Tensor:
    k = centered_gram(x)
    return k / torch.trace(k)  # trace = ||Xc||_F^2 > 0 for a non-constant representation


# ---------------------------------------------------------------------------------------------
# linear CKA
# ---------------------------------------------------------------------------------------------

def cka(x, y, method: str = "auto") -> float:
    """Linear CKA with the biased HSIC on the full data (Kornblith et al. 2019).

    ``<Kc, Lc> / (||Kc|| ||Lc||)`` with Kc, Lc the centred linear Grams, i.e.
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``. ``method``: ``"auto"`` (cheaper form),
    ``"gram"`` or ``"feature"``. Invariant to orthogonal maps, isotropic scaling and translation
    of either argument. Known positive bias for finite N (about D/(N+D) for independent data);
    see :func:`cka_debiased`. A constant representation is a UserError.
    """
    xf, yf = pair(x, y, measure="CKA")
    require_varies(xf, "x", "CKA")
    require_varies(yf, "y", "CKA")
    if use_feature_form(xf.shape[0], (xf.shape[1], yf.shape[1]), method):
        xc, yc = _prep.unit_frobenius(center64(xf)), _prep.unit_frobenius(center64(yf))
        return _ratio(*biased_terms_feature(xc, yc))
    return _ratio(*biased_terms_gram(_unit_gram(xf), _unit_gram(yf)))


def _debiased_ratio(hkl, hkk, hll, what: str = "debiased CKA") -> float:
    if not (float(hkk) > 0 and float(hll) > 0):
        raise UserError(f"{what} is undefined here: the unbiased HSIC estimate of a representation with "
                        f"itself is not positive (HSIC(K,K)={float(hkk):.3g}, HSIC(L,L)={float(hll):.3g}); "
                        f"use more samples")
    return _ratio(hkl, hkk, hll)


def cka_debiased(x, y, method: str = "auto") -> float:
    """Linear CKA with the unbiased HSIC estimator (Song et al. 2012), as in Nguyen et al. 2021.

    Near 0 for independent data (no finite-sample bias), 1 for identical representations, may be
    slightly negative. Needs N >= 4 (UserError otherwise). If an estimate of HSIC(K,K) is not
    positive (tiny N, degenerate data) a UserError is raised instead of returning NaN.
    """
    xf, yf = pair(x, y, min_n=4, measure="debiased CKA (unbiased HSIC)")
    require_varies(xf, "x", "debiased CKA")
    require_varies(yf, "y", "debiased CKA")
    if use_feature_form(xf.shape[0], (xf.shape[1], yf.shape[1]), method):
        xc, yc = _prep.unit_frobenius(center64(xf)), _prep.unit_frobenius(center64(yf))
        return _debiased_ratio(*unbiased_terms_feature(xc, yc))
    return _debiased_ratio(*unbiased_terms_gram(_unit_gram(xf), _unit_gram(yf)))


# ---------------------------------------------------------------------------------------------
# minibatch CKA (Nguyen et al. 2021)
# ---------------------------------------------------------------------------------------------

class MinibatchCKA:
    """Streaming linear CKA of Nguyen et al. (2021).

    Each :meth:`update` adds one batch's unbiased HSIC(K,L), HSIC(K,K), HSIC(L,L) (Song et al.,
    float64, batch centred first); :meth:`value` is ``mean HSIC_KL / sqrt(mean HSIC_KK * mean HSIC_LL)``
    over the batches (an unweighted mean, as in the paper). Batches need >= 4 samples. The sums
    stay on the batches' device until :meth:`value`, so updating never synchronises a GPU.
    """

    def __init__(self, method: str = "auto"):
        self.method = check_method(method)
        self.reset()

    def reset(self) -> None:
        self._sums: Optional[torch.Tensor] = None
        self.batches = 0

    def _add(self, terms: Tuple[torch.Tensor, ...], count: int) -> None:
        sums = torch.stack([t.reshape(-1).sum() for t in terms])
        self._sums = sums if self._sums is None else self._sums + sums.to(self._sums.device)
        self.batches += count

    def _add_batches(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """``xb``: B x n x D_x, ``yb``: B x n x D_y (B batches of n >= 4 samples, raw dtype)."""
        n = xb.shape[-2]
        xc = xb.to(torch.float64)
        xc = xc - xc.mean(dim=-2, keepdim=True)
        yc = yb.to(torch.float64)
        yc = yc - yc.mean(dim=-2, keepdim=True)
        if use_feature_form(n, (xb.shape[-1], yb.shape[-1]), self.method):
            terms = unbiased_terms_feature(xc, yc)
        else:
            terms = unbiased_terms_gram(xc @ xc.mT, yc @ yc.mT)
        self._add(terms, xb.shape[0])

    def update(self, x_batch, y_batch) -> "MinibatchCKA":
        """Add one batch (``N_b x ...`` each, same N_b >= 4; flattened per sample)."""
        xf, yf = pair(x_batch, y_batch, names=("x_batch", "y_batch"), min_n=4,
                      measure="a minibatch CKA batch (unbiased HSIC)")
        self._add_batches(xf.unsqueeze(0), yf.unsqueeze(0))
        return self

    def value(self) -> float:
        if self._sums is None:
            raise UserError("MinibatchCKA.value() called before any update()")
        mean = self._sums / self.batches
        return _debiased_ratio(mean[0], mean[1], mean[2], "minibatch CKA")


def cka_minibatch(x, y, batch_size: int = 256, method: str = "auto") -> float:
    """Minibatch CKA (Nguyen et al. 2021) over consecutive batches of ``batch_size`` samples.

    The data are split in order (no shuffling) into batches of ``batch_size``; a final remainder of
    fewer than 4 samples (too few for the unbiased HSIC) is merged into the preceding batch, and
    when N <= batch_size the whole data is one batch, so the result then equals
    :func:`cka_debiased`. Full batches are evaluated together as a batched tensor op.
    """
    if int(batch_size) != batch_size or batch_size < 4:
        raise UserError(f"batch_size must be an integer >= 4 (the unbiased HSIC needs 4 samples), got {batch_size}")
    batch_size = int(batch_size)
    xf, yf = pair(x, y, min_n=4, measure="minibatch CKA (unbiased HSIC)")
    require_varies(xf, "x", "minibatch CKA")
    require_varies(yf, "y", "minibatch CKA")
    n = xf.shape[0]
    acc = MinibatchCKA(method)
    full = n // batch_size
    if 0 < n - full * batch_size < 4:
        full -= 1  # the short remainder joins the last full batch
    # evaluate the regular batches in groups that keep the float64 copies ~BLOCK_ELEMS
    width = xf.shape[1] + yf.shape[1]
    group = max(1, BLOCK_ELEMS // (batch_size * width))
    for start in range(0, full, group):
        stop = min(full, start + group)
        rows = slice(start * batch_size, stop * batch_size)
        acc._add_batches(xf[rows].reshape(stop - start, batch_size, -1),
                         yf[rows].reshape(stop - start, batch_size, -1))
    if full * batch_size < n:
        rest = slice(full * batch_size, n)
        acc._add_batches(xf[rest].unsqueeze(0), yf[rest].unsqueeze(0))
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
        raise UserError(f"the median pairwise distance of {name} is 0 (more than half of its samples "
                        f"coincide): the RBF bandwidth is undefined")
    sigma = sigma_frac * median
    return sq.div_(-2 * sigma * sigma).exp_()


def _double_center(k: torch.Tensor) -> torch.Tensor:
    row = k.mean(dim=1, keepdim=True)
    return k - row - row.T + row.mean()


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
    xf, yf = pair(x, y, min_n=4 if debiased else 2, measure="RBF CKA")
    require_varies(xf, "x", "RBF CKA")
    require_varies(yf, "y", "RBF CKA")
    k, l = rbf_gram(xf, sigma_frac, "x"), rbf_gram(yf, sigma_frac, "y")
    if debiased:
        return _debiased_ratio(*unbiased_terms_gram(k, l), "debiased RBF CKA")
    return _ratio(*biased_terms_gram(_double_center(k), _double_center(l)))


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
    whose Gram is (numerically) a multiple of the input Gram has no deconfounded part: UserError.
    """
    if inputs is None:
        raise UserError("dcka needs the network inputs: pass inputs=<the N input samples> "
                        "(the input similarity is what gets regressed out)")
    xf, yf = pair(x, y, measure="dCKA")
    zf = _prep.extra(inputs, xf.shape[0], xf.device, "inputs", xf)
    require_varies(xf, "x", "dCKA")
    require_varies(yf, "y", "dCKA")
    require_varies(zf, "inputs", "dCKA")
    dims = (xf.shape[1], yf.shape[1], zf.shape[1])
    if use_feature_form(xf.shape[0], dims, method):
        xc, yc, zc = (_prep.unit_frobenius(center64(t)) for t in (xf, yf, zf))
        kl, kk, ll = biased_terms_feature(xc, yc)
        k0, l0, z0 = _sq_fro(zc.T @ xc), _sq_fro(zc.T @ yc), _sq_fro(zc.T @ zc)
        num = kl - k0 * l0 / z0
        rk, rl = kk - k0 * k0 / z0, ll - l0 * l0 / z0
        scale_k, scale_l = kk, ll
    else:
        k, l, g0 = _unit_gram(xf), _unit_gram(yf), _unit_gram(zf)
        z0 = _sq_fro(g0)
        scale_k, scale_l = _sq_fro(k), _sq_fro(l)
        k.sub_(g0, alpha=float(_fro(k, g0) / z0))
        l.sub_(g0, alpha=float(_fro(l, g0) / z0))
        num, rk, rl = _fro(k, l), _sq_fro(k), _sq_fro(l)
    for name, resid, scale in (("x", rk, scale_k), ("y", rl, scale_l)):
        if not float(resid) > CONFOUNDED_RTOL * float(scale):
            raise UserError(f"dCKA is undefined: the similarity structure of {name} is entirely explained "
                            f"by the inputs' (its Gram is a multiple of the input Gram)")
    return as_float(num / torch.sqrt(rk * rl))

