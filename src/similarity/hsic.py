"""The two HSIC estimators, each implemented once, and the engine that sums them over layers and batches.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for Gram matrices K (of X) and L (of Y).

- :data:`BIASED` (Gretton et al. 2005): ``<HKH, HLH> / n^2`` (:func:`cka`, :func:`cka_rbf`, :func:`dcka`).
- :data:`UNBIASED` (Song et al. 2012): ``<U(K), U(L)> / (n(n-3))`` with U the U-centring of Szekely &
  Rizzo (2014): zero diagonal K~, then ``K^_ij = K~_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2))``
  off the diagonal (r = row sums of K~, s = their total), 0 on it (:func:`cka_debiased`, and per
  batch :func:`cka_minibatch`).

Each estimator has two forms that give the same number (up to rounding):

- **Gram form** (:meth:`HSICEstimator.prepare_`): a stack of Gram matrices is centred and scaled (each
  side by ``1/n`` or ``1/sqrt(n(n-3))``) and flattened to rows of length n^2, so that the HSIC of two
  representations is the inner product of their rows, and one matrix product ``F1 @ F2.T`` gives
  the HSIC of every pair of layers (:class:`HSICMatrix`).
- **feature form** (:attr:`HSICEstimator.feature_terms`, linear kernels only): from the centred data,
  with ``D_x x D_y`` products instead of N x N matrices (cheaper when N exceeds the widths).

:class:`HSICMatrix` is the one engine behind every linear CKA number: the layer x layer matrices
(:mod:`src.similarity.layer_pairs`, :func:`src.similarity.layer_similarity`) and the single-pair
functions of :mod:`src.similarity.cka`, which are the engine applied to one pair (Gram form) or the
same estimator's feature form.

Precision: products are formed in float32 from data centred first (an offset of the features does
not reach the products), or in float64 for float64 data / ``precision="float64"``; every sum of
products, every centring of a Gram matrix and every HSIC is float64 (see :mod:`src.similarity.gram`).
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from src.errors import UserError
from src.similarity import stats
from src.similarity.gram import double_center_, gram_precision, layer_grams, linear_gram, u_center_, upper_row_blocks

Terms = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# sums of squares in float64
# ---------------------------------------------------------------------------------------------

def sq_fro(p: torch.Tensor) -> torch.Tensor:
    """``||p||_F^2`` over the last two axes, accumulated in float64 whatever ``p``'s dtype (a norm with
    a float64 accumulator: no squared temporary in ``p``'s dtype)."""
    return torch.linalg.vector_norm(p, dim=(-2, -1), dtype=torch.float64).square()


def sq_fro_gram_t(xc: torch.Tensor) -> torch.Tensor:
    """``||xc^T xc||_F^2`` of an ``n x D`` matrix (leading batch axes allowed).

    For one wide matrix only the row blocks of ``xc^T xc`` on and above the diagonal are formed
    (:func:`src.similarity.gram.upper_row_blocks`, 9/16 of the flops for 8 blocks), each
    off-diagonal block counted twice; nothing of size D x D is assembled.
    """
    if xc.dim() > 2 or xc.shape[-1] < 512:
        return sq_fro(xc.mT @ xc)
    total = torch.zeros((), dtype=torch.float64, device=xc.device)
    for _, block in upper_row_blocks(xc.T, min(8, xc.shape[-1] // 256)):
        width = block.shape[0]
        total += sq_fro(block[:, :width]) + 2 * sq_fro(block[:, width:])
    return total


# ---------------------------------------------------------------------------------------------
# the estimators
# ---------------------------------------------------------------------------------------------

def _biased_feature(xc: torch.Tensor, yc: torch.Tensor) -> Terms:
    """Biased (HSIC(K,L), HSIC(K,K), HSIC(L,L)) of centred data: ``||Y^T X||^2 / n^2`` etc."""
    n2 = float(xc.shape[-2]) ** 2
    return sq_fro(yc.mT @ xc) / n2, sq_fro_gram_t(xc) / n2, sq_fro_gram_t(yc) / n2


def _u_combine(n: int, tr, sum_k, sum_l, rows_dot):
    """Song et al. (2012) unbiased HSIC from its four ingredients (K~, L~ have zero diagonals).

    HSIC_1 = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)).
    """
    return (tr + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * rows_dot) / (n * (n - 3))


def _unbiased_feature(xc: torch.Tensor, yc: torch.Tensor) -> Terms:
    """Unbiased HSICs of linear kernels without N x N matrices (leading batch axes allowed).

    With a_i = |x_i|^2 (the diagonal of K) and s = X^T 1:  tr(K~L~) = ||Y^T X||^2 - a.b,
    1'K~1 = |s|^2 - sum(a),  K~1 = X s - a.  (s is ~0 for centred data; it is kept so that the
    identity holds exactly for any input.) Vectors and sums are float64.
    """
    n = xc.shape[-2]
    f64 = torch.float64
    a, b = xc.square().sum(-1, dtype=f64), yc.square().sum(-1, dtype=f64)
    sx, sy = xc.sum(-2, dtype=f64), yc.sum(-2, dtype=f64)
    kx1 = (xc.to(f64) @ sx.unsqueeze(-1)).squeeze(-1) - a
    ly1 = (yc.to(f64) @ sy.unsqueeze(-1)).squeeze(-1) - b
    tk = sx.square().sum(-1) - a.sum(-1)
    tl = sy.square().sum(-1) - b.sum(-1)
    dot = lambda u, v: (u * v).sum(-1)  # noqa: E731
    kl, kk, ll = sq_fro(yc.mT @ xc), sq_fro_gram_t(xc), sq_fro_gram_t(yc)
    return (_u_combine(n, kl - dot(a, b), tk, tl, dot(kx1, ly1)),
            _u_combine(n, kk - dot(a, a), tk, tk, dot(kx1, kx1)),
            _u_combine(n, ll - dot(b, b), tl, tl, dot(ly1, ly1)))


@dataclass(frozen=True)
class HSICEstimator:
    """One HSIC estimator in its two forms (see the module docstring)."""

    name: str
    min_n: int
    center_: Callable[[torch.Tensor], torch.Tensor]  # centres a float64 Gram stack (..., n, n) in place
    scale: Callable[[int], float]  # per-side factor: <F1, F2> of the prepared rows is the HSIC
    feature_terms: Callable[[torch.Tensor, torch.Tensor], Terms]  # (kl, kk, ll) from centred data

    def check_n(self, n: int, what: str = "batch") -> None:
        if n < self.min_n:
            raise UserError(f"the {self.name} HSIC needs at least {self.min_n} samples per {what}, got {n}")

    def prepare_(self, grams: torch.Tensor) -> torch.Tensor:
        """Centre (in place) and scale a float64 Gram stack ``(..., n, n)``; returns it flattened to
        ``(..., n*n)`` so that inner products of rows are HSIC estimates."""
        n = grams.shape[-1]
        self.check_n(n)
        return self.center_(grams).mul_(self.scale(n)).flatten(-2)


BIASED = HSICEstimator("biased", 2, double_center_, lambda n: 1.0 / n, _biased_feature)
UNBIASED = HSICEstimator("unbiased", 4, u_center_, lambda n: 1.0 / float(np.sqrt(n * (n - 3))), _unbiased_feature)
ESTIMATORS = {e.name: e for e in (BIASED, UNBIASED)}


def get_estimator(estimator: Union[str, HSICEstimator]) -> HSICEstimator:
    if isinstance(estimator, HSICEstimator):
        return estimator
    if estimator not in ESTIMATORS:
        raise UserError(f"unknown HSIC estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[estimator]


def minibatch_slices(n: int, batch_size: int) -> List[slice]:
    """Consecutive batches of ``batch_size``; a final remainder of fewer than 4 samples (too few for
    the unbiased HSIC) joins the batch before, and N <= batch_size is one batch."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 4:
        raise UserError(f"batch_size must be an integer >= 4 (the unbiased HSIC needs 4 samples), got {batch_size}")
    batch_size = int(batch_size)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 4:
        starts.pop()
    return [slice(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def hsic_terms(f1: torch.Tensor, f2: Optional[torch.Tensor] = None) -> Terms:
    """(cross ``L1 x L2``, self ``L1``, self ``L2``) HSIC estimates of prepared stacks (one matmul);
    ``f2=None``: the same stack on both sides (the symmetric product is formed once)."""
    if f2 is None:
        cross = f1 @ f1.T
        s1 = cross.diagonal().clone()
        return cross, s1, s1
    return f1 @ f2.T, f1.square().sum(-1), f2.square().sum(-1)


def ratio(kl: torch.Tensor, kk: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
    """CKA from the three HSIC terms (broadcasting ``kk`` over rows, ``ll`` over columns for matrices)."""
    if kl.dim() == 2:
        kk, ll = kk[:, None], ll[None, :]
    return kl / torch.sqrt(kk * ll)


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------

class HSICMatrix:
    """Sums over batches of the HSIC of every layer pair, on the batches' device, in float64.

    ``update(acts1, acts2)`` takes one batch: a list of L1 tensors (n x ... each, model 1's
    layers) and a list of L2 tensors (model 2's), or ``acts2=None`` when both sides are the same
    activations (the Grams and the symmetric product are then formed once). :meth:`values` is the
    CKA matrix ``sum HSIC_ab / sqrt(sum HSIC_aa sum HSIC_bb)``.

    ``permutations=K``: the cross terms are also summed for K random permutations of the samples
    of one side *within each batch* (the same K permutations for every layer), for the p-values of
    :func:`src.similarity.stats.permutation_pvalues`. ``keep_batches=True`` keeps each batch's
    terms for the bootstrap over batches. ``generator``: a ``torch.Generator`` (CPU) for both.
    """

    def __init__(self, estimator: Union[str, HSICEstimator] = "unbiased", precision="float32", permutations: int = 0,
                 keep_batches: bool = False, generator: Optional[torch.Generator] = None, device=None):
        self.estimator = get_estimator(estimator)
        self.dtype = gram_precision(precision)
        self.permutations = int(permutations)
        self.keep_batches = keep_batches
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.device = None if device is None else torch.device(device)
        self.cross: Optional[torch.Tensor] = None
        self.self1: Optional[torch.Tensor] = None
        self.self2: Optional[torch.Tensor] = None
        self.null: Optional[torch.Tensor] = None
        self.batches: List[Terms] = []
        self.n_samples = 0
        self.n_batches = 0

    def prepared(self, acts: Sequence[torch.Tensor]) -> torch.Tensor:
        """The prepared ``(L, n*n)`` float64 stack of one side of a batch."""
        self.estimator.check_n(int(acts[0].shape[0]))
        return self.estimator.prepare_(layer_grams(acts, self.dtype, self.device or acts[0].device))

    def gram(self, activation: torch.Tensor) -> torch.Tensor:
        """The Gram matrix of one layer's activation as :meth:`prepared` forms it (for computing it
        early, e.g. inside a forward hook while the activation is still in the CPU's caches)."""
        return linear_gram(activation, self.dtype)

    def prepared_grams(self, grams: Sequence[torch.Tensor]) -> torch.Tensor:
        """:meth:`prepared` from Grams already formed by :meth:`gram`."""
        self.estimator.check_n(int(grams[0].shape[0]))
        device = self.device or grams[0].device
        return self.estimator.prepare_(torch.stack([g.to(device, torch.float64) for g in grams]))

    def update(self, acts1: Sequence[torch.Tensor], acts2: Optional[Sequence[torch.Tensor]] = None,
               grams: bool = False) -> "HSICMatrix":
        """Add one batch: activations, or (``grams=True``) their Grams from :meth:`gram`."""
        prepare = self.prepared_grams if grams else self.prepared
        f1 = prepare(acts1)
        f2 = None if acts2 is None else prepare(acts2)
        return self.update_prepared(f1, f2, int(acts1[0].shape[0]))

    def update_prepared(self, f1: torch.Tensor, f2: Optional[torch.Tensor], n: int) -> "HSICMatrix":
        """Add one batch of already prepared stacks (``f2=None``: the same as ``f1``)."""
        self.add_terms(*hsic_terms(f1, f2), n)
        if self.permutations:
            null = stats.permuted_cross(f1, f1 if f2 is None else f2, n, self.permutations, self.generator)
            self.null = null if self.null is None else self.null.add_(null)
        return self

    def add_terms(self, cross: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, n: int) -> "HSICMatrix":
        """Add one batch's HSIC terms (however they were computed)."""
        if self.cross is None:
            self.cross, self.self1, self.self2 = cross.clone(), s1.clone(), s2.clone()
        else:
            self.cross += cross
            self.self1 += s1
            self.self2 += s2
        if self.keep_batches:
            self.batches.append((cross, s1, s2))
        self.n_samples += n
        self.n_batches += 1
        return self

    def values(self) -> torch.Tensor:
        """The CKA matrix as a float64 tensor."""
        if self.cross is None:
            raise UserError("no batches were added; the data are empty")
        return ratio(self.cross, self.self1, self.self2)

    def undefined(self, rows: Sequence[str], cols: Sequence[str]) -> List[str]:
        """Names of the layers whose HSIC with themselves is not positive (CKA undefined)."""
        bad1 = [f"{rows[i]} (model 1)" for i in torch.nonzero(~(self.self1 > 0)).flatten().tolist()]
        bad2 = [f"{cols[i]} (model 2)" for i in torch.nonzero(~(self.self2 > 0)).flatten().tolist()]
        return bad1 + bad2

    def check_positive(self, rows: Sequence[str], cols: Sequence[str]) -> None:
        bad = self.undefined(rows, cols)
        if bad:
            raise UserError(f"CKA is undefined for layer(s) {', '.join(bad)}: the HSIC estimate of the layer with itself "
                            f"is not positive (a constant or dead representation, or too few samples); "
                            f"leave them out with --layers1/--layers2 (layers1=/layers2=)")

    def statistics(self, bootstrap: int = 0, ci: float = 0.95, grams_for_bootstrap=None) -> dict:
        """p-values (when permutations were drawn) and a bootstrap interval, as numpy arrays."""
        out = {"permutations": self.permutations, "bootstrap": int(bootstrap)}
        if self.permutations:
            out["pvalues"] = stats.permutation_pvalues(self.cross, self.null, self.self1, self.self2)
        if bootstrap:
            if grams_for_bootstrap is not None:
                replicates = stats.sample_bootstrap(*grams_for_bootstrap, bootstrap, self.generator)
                out["bootstrap_unit"] = "samples"
            else:
                cross, s1, s2 = (torch.stack(parts) for parts in zip(*self.batches))
                replicates = stats.batch_bootstrap(cross, s1, s2, bootstrap, self.generator)
                out["bootstrap_unit"] = "batches"
            out["ci_low"], out["ci_high"] = stats.percentile_interval(replicates, ci)
            out["ci_level"] = float(ci)
        return out
