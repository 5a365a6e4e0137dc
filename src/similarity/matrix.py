"""Layer x layer similarity matrices: every pair of layers at once from stacked Gram matrices.

Linear CKA of layers a (model 1) and b (model 2) is ``HSIC(K_a, L_b) / sqrt(HSIC(K_a, K_a) HSIC(L_b, L_b))``.
For a batch of n samples each layer gives one n x n Gram matrix; prepared as below and flattened
to a row of length n^2, the rows of all L1 layers of model 1 form ``F1`` (L1 x n^2), those of model 2
``F2``, and **one** matrix product ``F1 @ F2.T`` gives the HSIC of every layer pair; the self terms
are the rows' squared norms. No Python loop over pairs, no host synchronisation per value.

Preparation, by estimator:

- ``"unbiased"`` (Song et al. 2012; :func:`cka_debiased`, and per batch :func:`cka_minibatch`):
  the Gram is *U-centred* (Szekely & Rizzo 2014): zero diagonal K~, then
  ``K^_ij = K~_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2))`` off the diagonal (r = row sums of K~,
  s = their total), 0 on it. ``<K^, L^> / (n(n-3))`` is exactly Song's unbiased HSIC.
- ``"biased"`` (:func:`cka`): the Gram is double centred, ``H K H``.

Each side is scaled by ``1/sqrt(n(n-3))`` (or ``1/n``) so that sums over batches of different
sizes add HSIC values, as :class:`src.similarity.MinibatchCKA` does.

Precision: each Gram is formed in float32 (the expensive part, ~2 n^2 D flops per layer) without
losing more than 3 bits to a common offset of the features, and everything after it (centring,
products, sums over batches) is float64; see :mod:`src.similarity.gram`. Tests check that inputs
with an offset of 1e4 still give the float64 result to ~1e-6.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from src.errors import UserError
from src.features.store import check_memory
from src.similarity import stats
from src.similarity.gram import double_center_, gram_precision, layer_grams, u_center_

ESTIMATORS = ("unbiased", "biased")

#: Measures computed from stacked Gram matrices, and their HSIC estimator.
GRAM_MEASURES = {"cka_minibatch": "unbiased", "cka_debiased": "unbiased", "cka": "biased"}
#: The Gram measure that streams over batches; the others need the whole data set at once.
STREAMING = "cka_minibatch"
MIN_BATCH = {"unbiased": 4, "biased": 2}


def check_estimator(estimator: str) -> str:
    if estimator not in ESTIMATORS:
        raise UserError(f"unknown HSIC estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    return estimator


def prepare_(grams: torch.Tensor, estimator: str) -> torch.Tensor:
    """Centre (in place) and scale a float64 Gram stack ``(L, n, n)`` and flatten it to ``(L, n*n)``,
    so that ``F1 @ F2.T`` is the matrix of HSIC estimates (see the module docstring)."""
    n = grams.shape[-1]
    if check_estimator(estimator) == "unbiased":
        if n < 4:
            raise UserError(f"the unbiased HSIC needs at least 4 samples per batch, got {n}")
        u_center_(grams)
        scale = 1.0 / float(np.sqrt(n * (n - 3)))
    else:
        double_center_(grams)
        scale = 1.0 / n
    return grams.mul_(scale).reshape(grams.shape[0], n * n)


def hsic_terms(f1: torch.Tensor, f2: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, ...]:
    """(cross ``L1 x L2``, self ``L1``, self ``L2``) HSIC estimates of prepared stacks (one matmul)."""
    s1 = torch.linalg.vecdot(f1, f1)
    if f2 is None:
        return f1 @ f1.T, s1, s1
    return f1 @ f2.T, s1, torch.linalg.vecdot(f2, f2)


# ---------------------------------------------------------------------------------------------
# accumulating over batches
# ---------------------------------------------------------------------------------------------

@dataclass
class MatrixEstimate:
    """A CKA matrix with the optional permutation p-values and bootstrap interval (numpy arrays)."""

    values: np.ndarray
    n_samples: int
    n_batches: int
    estimator: str
    pvalues: Optional[np.ndarray] = None
    ci_low: Optional[np.ndarray] = None
    ci_high: Optional[np.ndarray] = None
    ci_level: Optional[float] = None
    permutations: int = 0
    bootstrap: int = 0
    info: Dict[str, Any] = field(default_factory=dict)


class HSICMatrix:
    """Sums over batches of the HSIC of every layer pair, on the batches' device, in float64.

    ``update(acts1, acts2)`` takes one batch: a list of L1 tensors (n x ... each, model 1's
    layers) and a list of L2 tensors (model 2's), or ``acts2=None`` when both sides are the same
    activations (the Grams are then formed once). ``estimate()`` returns the CKA matrix
    ``sum HSIC_ab / sqrt(sum HSIC_aa sum HSIC_bb)`` (one host synchronisation, at the end).

    ``permutations=K``: the cross terms are also summed for K random permutations of the samples
    of one side *within each batch* (the same K permutations for every layer), for the p-values of
    :func:`src.similarity.stats.permutation_pvalues`. ``keep_batches=True`` keeps each batch's
    terms for the bootstrap over batches. ``generator``: a ``torch.Generator`` (CPU) for both.
    """

    def __init__(self, estimator: str = "unbiased", precision="float32", permutations: int = 0,
                 keep_batches: bool = False, generator: Optional[torch.Generator] = None, device=None):
        self.estimator = check_estimator(estimator)
        self.dtype = gram_precision(precision)
        self.permutations = int(permutations)
        self.keep_batches = keep_batches
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.device = None if device is None else torch.device(device)
        self.cross: Optional[torch.Tensor] = None
        self.self1: Optional[torch.Tensor] = None
        self.self2: Optional[torch.Tensor] = None
        self.null: Optional[torch.Tensor] = None
        self.batches: List[Tuple[torch.Tensor, ...]] = []
        self.n_samples = 0
        self.n_batches = 0

    def prepared(self, acts: Sequence[torch.Tensor]) -> torch.Tensor:
        """The prepared ``(L, n*n)`` float64 stack of one side of a batch."""
        return prepare_(layer_grams(acts, self.dtype, self.device or acts[0].device), self.estimator)

    def update(self, acts1: Sequence[torch.Tensor], acts2: Optional[Sequence[torch.Tensor]] = None) -> "HSICMatrix":
        f1 = self.prepared(acts1)
        f2 = None if acts2 is None else self.prepared(acts2)
        return self.update_prepared(f1, f2, int(acts1[0].shape[0]))

    def update_prepared(self, f1: torch.Tensor, f2: Optional[torch.Tensor], n: int) -> "HSICMatrix":
        """Add one batch of already prepared stacks (``f2=None``: the same as ``f1``)."""
        cross, s1, s2 = hsic_terms(f1, f2)
        if self.cross is None:
            self.cross, self.self1, self.self2 = cross.clone(), s1.clone(), s2.clone()
        else:
            self.cross += cross
            self.self1 += s1
            self.self2 += s2
        if self.keep_batches:
            self.batches.append((cross, s1, s2))
        if self.permutations:
            null = stats.permuted_cross(f1, f1 if f2 is None else f2, n, self.permutations, self.generator)
            self.null = null if self.null is None else self.null.add_(null)
        self.n_samples += n
        self.n_batches += 1
        return self

    def values(self) -> torch.Tensor:
        """The CKA matrix as a float64 tensor; a representation without variance is a UserError."""
        if self.cross is None:
            raise UserError("no batches were added; the data are empty")
        return self.cross / torch.sqrt(self.self1[:, None] * self.self2[None, :])

    def check_positive(self, rows: Sequence[str], cols: Sequence[str]) -> None:
        bad1 = [rows[i] for i in torch.nonzero(~(self.self1 > 0)).flatten().tolist()]
        bad2 = [cols[i] for i in torch.nonzero(~(self.self2 > 0)).flatten().tolist()]
        if bad1 or bad2:
            names = ", ".join([f"{n} (model 1)" for n in bad1] + [f"{n} (model 2)" for n in bad2])
            raise UserError(f"CKA is undefined for layer(s) {names}: the HSIC estimate of the layer with itself "
                            f"is not positive (a constant or dead representation, or too few samples); "
                            f"leave them out with --layers1/--layers2 (layers1=/layers2=)")

    def estimate(self, rows: Sequence[str], cols: Sequence[str], bootstrap: int = 0, ci: float = 0.95,
                 grams_for_bootstrap=None) -> MatrixEstimate:
        """The CKA matrix with p-values (when permutations were drawn) and a bootstrap interval."""
        self.check_positive(rows, cols)
        values = self.values()
        result = MatrixEstimate(values=values.cpu().numpy(), n_samples=self.n_samples, n_batches=self.n_batches,
                                estimator=self.estimator, permutations=self.permutations, bootstrap=int(bootstrap))
        if self.permutations:
            result.pvalues = stats.permutation_pvalues(self.cross, self.null, self.self1, self.self2)
        if bootstrap:
            if grams_for_bootstrap is not None:
                replicates = stats.sample_bootstrap(*grams_for_bootstrap, bootstrap, self.generator)
                result.info["bootstrap_unit"] = "samples"
            else:
                cross, s1, s2 = (torch.stack(parts) for parts in zip(*self.batches))
                replicates = stats.batch_bootstrap(cross, s1, s2, bootstrap, self.generator)
                result.info["bootstrap_unit"] = "batches"
            result.ci_low, result.ci_high = stats.percentile_interval(replicates, ci)
            result.ci_level = float(ci)
        return result


# ---------------------------------------------------------------------------------------------
# whole data sets in memory
# ---------------------------------------------------------------------------------------------

def check_stats_options(measure: str, permutations: int, bootstrap: int, ci: float) -> None:
    """Permutation tests and bootstrap intervals exist for the CKA measures (see :mod:`stats`)."""
    for name, value in (("permutations", permutations), ("bootstrap", bootstrap)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise UserError(f"{name} must be a non-negative integer, got {value!r}")
    if (permutations or bootstrap) and measure not in GRAM_MEASURES:
        raise UserError(f"permutation tests and bootstrap intervals are available for "
                        f"{', '.join(GRAM_MEASURES)}, not {measure}")
    if bootstrap and measure == "cka_debiased":
        raise UserError("no bootstrap for cka_debiased: resampling with replacement duplicates samples, which "
                        "biases the unbiased HSIC; use cka_minibatch (bootstrap over batches) or cka "
                        "(bootstrap over samples)")
    if bootstrap and not 0 < ci < 1:
        raise UserError(f"the confidence level must be between 0 and 1, got {ci}")


def minibatch_slices(n: int, batch_size: int) -> List[slice]:
    """Consecutive batches of ``batch_size``; a final remainder of fewer than 4 joins the batch before
    (as :func:`src.similarity.cka_minibatch` splits the data)."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 4:
        raise UserError(f"batch_size must be an integer >= 4 (the unbiased HSIC needs 4 samples), got {batch_size}")
    batch_size = int(batch_size)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 4:
        starts.pop()
    return [slice(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def full_gram_bytes(n: int, n_layers: int, bootstrap: int = 0) -> int:
    """Memory of the ``(L, n, n)`` Gram stacks of the full-data measures (float64 plus the float32 they
    are formed in; twice with a bootstrap)."""
    return 12 * n * n * n_layers * (2 if bootstrap else 1)


def cka_matrix(acts1: Sequence[torch.Tensor], acts2: Optional[Sequence[torch.Tensor]] = None, *,
               measure: str = "cka", rows: Optional[Sequence[str]] = None, cols: Optional[Sequence[str]] = None,
               batch_size: int = 256, precision="float32", permutations: int = 0, bootstrap: int = 0,
               ci: float = 0.95, seed: int = 0, device=None) -> MatrixEstimate:
    """CKA of every pair (a from ``acts1``, b from ``acts2``) of activations of the same N samples.

    ``measure``: ``"cka"`` (biased HSIC, whole data), ``"cka_debiased"`` (unbiased HSIC, whole
    data) or ``"cka_minibatch"`` (consecutive batches of ``batch_size``, as
    :func:`src.similarity.cka_minibatch`). ``acts2=None`` compares ``acts1`` with itself. The
    whole-data measures hold one float64 N x N matrix per layer (checked against the memory).
    """
    if measure not in GRAM_MEASURES:
        raise UserError(f"cka_matrix computes {', '.join(GRAM_MEASURES)}, not {measure!r}")
    check_stats_options(measure, permutations, bootstrap, ci)
    same = acts2 is None
    acts2 = acts1 if same else acts2
    rows = list(rows) if rows is not None else [str(i) for i in range(len(acts1))]
    cols = list(cols) if cols is not None else [str(i) for i in range(len(acts2))]
    n = int(acts1[0].shape[0])
    for a in list(acts1) + list(acts2):
        if int(a.shape[0]) != n:
            raise UserError(f"all activations must hold the same samples: got {n} and {int(a.shape[0])} rows")
    estimator = GRAM_MEASURES[measure]
    device = acts1[0].device if device is None else torch.device(device)
    acc = HSICMatrix(estimator, precision, permutations, keep_batches=bool(bootstrap),
                     generator=torch.Generator().manual_seed(int(seed)), device=device)
    if measure == STREAMING:
        for part in minibatch_slices(n, batch_size):
            acc.update([a[part] for a in acts1], None if same else [a[part] for a in acts2])
        if bootstrap and acc.n_batches < 2:
            raise UserError(f"the bootstrap over batches needs at least 2 batches; {n} samples in batches of "
                            f"{batch_size} make 1: use a smaller batch size or more samples")
        return acc.estimate(rows, cols, bootstrap, ci)
    if n < MIN_BATCH[estimator]:
        raise UserError(f"{measure} needs at least {MIN_BATCH[estimator]} samples, got {n}")
    layers = len(acts1) + (0 if same else len(acts2))
    check_memory(full_gram_bytes(n, layers, bootstrap), f"{measure} of {n} samples ({layers} Gram matrices)",
                 "use fewer samples (--samples / max_samples) or cka_minibatch, which streams", device)
    f1 = acc.prepared(acts1)
    f2 = None if same else acc.prepared(acts2)
    acc.update_prepared(f1, f2, n)
    grams = (f1, f2) if bootstrap else None
    return acc.estimate(rows, cols, bootstrap, ci, grams_for_bootstrap=grams)


def pairwise_matrix(acts1: Sequence[torch.Tensor], acts2: Optional[Sequence[torch.Tensor]], measure: Callable,
                    rows: Sequence[str], cols: Sequence[str], **options) -> np.ndarray:
    """Any float measure, one layer pair at a time (the fallback for measures without a Gram form).

    A UserError of one pair names that pair. ``acts2=None``: ``acts1`` against itself.
    """
    acts2 = acts1 if acts2 is None else acts2
    values = np.empty((len(acts1), len(acts2)))
    for i, x in enumerate(acts1):
        for j, y in enumerate(acts2):
            try:
                values[i, j] = float(measure(x, y, **options))
            except UserError as err:
                raise UserError(f"layers {rows[i]} (model 1) and {cols[j]} (model 2): {err}") from err
    return values
