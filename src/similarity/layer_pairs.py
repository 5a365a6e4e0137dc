"""Layer x layer similarity matrices: every pair of layers at once from stacked Gram matrices.

Linear CKA of layers a (model 1) and b (model 2) is ``HSIC(K_a, L_b) / sqrt(HSIC(K_a, K_a) HSIC(L_b, L_b))``.
For a batch of n samples each layer gives one n x n Gram matrix; centred and scaled by the
measure's HSIC estimator (:mod:`src.similarity.hsic`) and flattened to a row of length n^2, the rows
of all L1 layers of model 1 form ``F1`` (L1 x n^2), those of model 2 ``F2``, and **one** matrix
product ``F1 @ F2.T`` gives the HSIC of every layer pair; the self terms are the rows' squared
norms. No Python loop over pairs, no host synchronisation per value.

The measure's registry record (:mod:`src.similarity.registry`) says which estimator its Gram form
uses (``cka``: biased, ``cka_debiased`` and ``cka_minibatch``: unbiased) and whether it streams over
batches (``cka_minibatch``); the engine is :class:`src.similarity.hsic.HSICMatrix`, the same one the
single-pair functions use. Other float measures are computed one pair at a time
(:func:`pairwise_matrix`).

Degenerate cells (:class:`src.similarity._prep.DegenerateMeasure`: fewer samples than the measure's
``min_samples``, a constant layer, CCA or lr with more features than samples, ...) are NaN with the
reason in ``SimilarityMatrix.degenerate`` and a :class:`src.similarity._prep.DegenerateWarning` naming
them; the rest of the matrix is computed as usual.

Precision: each Gram is formed in float32 (the expensive part, ~2 n^2 D flops per layer) from
centred data, and everything after it (centring, products, sums over batches) is float64; see
:mod:`src.similarity.gram`. Tests check that inputs with an offset of 1e4 still give the float64
result to ~1e-6.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from src.errors import UserError
from src.features.store import check_memory
from src.similarity._prep import DegenerateMeasure, degenerate_reason
from src.similarity.hsic import UNBIASED, HSICMatrix, minibatch_slices  # noqa: F401 (re-exported)
from src.similarity.registry import GRAM_MEASURES, Measure, get_record
from src.similarity.result import SimilarityMatrix


def gram_record(measure: str) -> Measure:
    """The registry record of a measure with a Gram form; any other name is a UserError."""
    record = get_record(measure)
    if record.gram is None:
        raise UserError(f"the stacked-Gram engine computes {', '.join(GRAM_MEASURES)}, not {measure!r}")
    return record


def check_stats_options(measure: str, permutations: int, bootstrap: int, ci: float) -> None:
    """Permutation tests and bootstrap intervals exist for the measures with a Gram form (see :mod:`stats`)."""
    for name, value in (("permutations", permutations), ("bootstrap", bootstrap)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise UserError(f"{name} must be a non-negative integer, got {value!r}")
    record = get_record(measure)
    if (permutations or bootstrap) and record.gram is None:
        raise UserError(f"permutation tests and bootstrap intervals are available for "
                        f"{', '.join(GRAM_MEASURES)}, not {measure}")
    if bootstrap and record.gram is UNBIASED and not record.streams:
        raise UserError(f"no bootstrap for {measure}: resampling with replacement duplicates samples, which "
                        "biases the unbiased HSIC; use cka_minibatch (bootstrap over batches) or cka "
                        "(bootstrap over samples)")
    if bootstrap and not 0 < ci < 1:
        raise UserError(f"the confidence level must be between 0 and 1, got {ci}")


def full_gram_bytes(n: int, n_layers: int, bootstrap: int = 0) -> int:
    """Memory of the ``(L, n, n)`` Gram stacks of the full-data measures (float64 plus the float32 they
    are formed in; twice with a bootstrap)."""
    return 12 * n * n * n_layers * (2 if bootstrap else 1)


def cka_matrix(acts1: Sequence[torch.Tensor], acts2: Optional[Sequence[torch.Tensor]] = None, *,
               measure: str = "cka", rows: Optional[Sequence[str]] = None, cols: Optional[Sequence[str]] = None,
               batch_size: int = 256, precision="float32", permutations: int = 0, bootstrap: int = 0,
               ci: float = 0.95, seed: int = 0, device=None) -> SimilarityMatrix:
    """CKA of every pair (a from ``acts1``, b from ``acts2``) of activations of the same N samples.

    ``measure``: ``"cka"`` (biased HSIC, whole data), ``"cka_debiased"`` (unbiased HSIC, whole
    data) or ``"cka_minibatch"`` (consecutive batches of ``batch_size``, as
    :func:`src.similarity.cka_minibatch`). ``acts2=None`` compares ``acts1`` with itself. The
    whole-data measures hold one float64 N x N matrix per layer (checked against the memory).
    Returns a :class:`SimilarityMatrix` (``meta["estimator"]``, and ``meta["bootstrap_unit"]`` with
    a bootstrap). Degenerate cells are NaN with their reasons in ``degenerate`` (see the module notes).
    """
    record = gram_record(measure)
    check_stats_options(measure, permutations, bootstrap, ci)
    same = acts2 is None
    acts2 = acts1 if same else acts2
    rows = list(rows) if rows is not None else [str(i) for i in range(len(acts1))]
    cols = list(cols) if cols is not None else [str(i) for i in range(len(acts2))]
    n = int(acts1[0].shape[0])
    for a in list(acts1) + list(acts2):
        if int(a.shape[0]) != n:
            raise UserError(f"all activations must hold the same samples: got {n} and {int(a.shape[0])} rows")
    estimator = record.gram
    if n < record.min_samples:  # every cell: fewer samples than the measure needs (per batch for cka_minibatch)
        sim = all_degenerate(measure, n, rows, cols, degenerate_reason(measure, n)[0])
        sim.warn_degenerate()
        return sim
    device = acts1[0].device if device is None else torch.device(device)
    acc = HSICMatrix(estimator, precision, permutations, keep_batches=bool(bootstrap),
                     generator=torch.Generator().manual_seed(int(seed)), device=device)
    grams = None
    if record.streams:
        for part in minibatch_slices(n, batch_size):
            acc.update([a[part] for a in acts1], None if same else [a[part] for a in acts2])
        if bootstrap and acc.n_batches < 2:
            raise UserError(f"the bootstrap over batches needs at least 2 batches; {n} samples in batches of "
                            f"{batch_size} make 1: use a smaller batch size or more samples")
        what = f"{estimator.name} HSIC, summed over batches"
    else:
        layers = len(acts1) + (0 if same else len(acts2))
        check_memory(full_gram_bytes(n, layers, bootstrap), f"{measure} of {n} samples ({layers} Gram matrices)",
                     "use fewer samples (--samples / max_samples) or cka_minibatch, which streams", device)
        f1 = acc.prepared(acts1)
        f2 = None if same else acc.prepared(acts2)
        acc.update_prepared(f1, f2, n)
        grams = (f1, f2) if bootstrap else None
        what = f"{estimator.name} HSIC on all samples"
    sim = estimate(acc, measure, rows, cols, bootstrap, ci, grams, {"estimator": what})
    sim.warn_degenerate()
    return sim


def all_degenerate(measure: str, n: int, rows: Sequence[str], cols: Sequence[str], reason: str,
                   meta: Optional[dict] = None) -> SimilarityMatrix:
    """A matrix of NaN whose every cell is degenerate for the same ``reason`` (e.g. too few samples)."""
    return SimilarityMatrix(np.full((len(rows), len(cols)), np.nan), rows, cols, measure, n, 1, meta=dict(meta or {}),
                            degenerate={(r, c): reason for r in rows for c in cols})


def undefined_cells(acc: HSICMatrix, measure: str, rows: Sequence[str], cols: Sequence[str]) -> Dict[Tuple[str, str], str]:
    """The cells whose layer's HSIC estimate with itself is not positive: a constant (dead) layer, or for the
    unbiased estimator too few samples; CKA is 0/0 there."""
    why = ("the {estimator} HSIC estimate of {layer} ({model}) with itself is not positive, so {measure} is 0/0 "
           "(a constant or dead layer on these inputs{small})")
    small = ", or too few samples" if acc.estimator.min_n > 2 else ""
    out: Dict[Tuple[str, str], str] = {}
    bad1 = torch.nonzero(~(acc.self1 > 0)).flatten().tolist()
    bad2 = torch.nonzero(~(acc.self2 > 0)).flatten().tolist()
    for i in bad1:
        text = why.format(estimator=acc.estimator.name, layer=rows[i], model="model 1", measure=measure, small=small)
        out.update({(rows[i], c): text for c in cols})
    for j in bad2:
        text = why.format(estimator=acc.estimator.name, layer=cols[j], model="model 2", measure=measure, small=small)
        out.update({(r, cols[j]): text for r in rows if (r, cols[j]) not in out})
    return out


def estimate(acc: HSICMatrix, measure: str, rows: Sequence[str], cols: Sequence[str], bootstrap: int = 0,
             ci: float = 0.95, grams_for_bootstrap=None, meta: Optional[dict] = None) -> SimilarityMatrix:
    """The engine's CKA matrix with p-values (when permutations were drawn) and a bootstrap interval; the cells of
    a layer whose HSIC with itself is not positive are degenerate (NaN, reason in ``degenerate``)."""
    degenerate = undefined_cells(acc, measure, rows, cols)
    extra = acc.statistics(bootstrap, ci, grams_for_bootstrap)
    meta = dict(meta or {})
    if "bootstrap_unit" in extra:
        meta["bootstrap_unit"] = extra.pop("bootstrap_unit")
    return SimilarityMatrix(acc.values().cpu().numpy(), rows, cols, measure, acc.n_samples, acc.n_batches,
                            meta=meta, degenerate=degenerate, **extra)


def pairwise_matrix(acts1: Sequence[torch.Tensor], acts2: Optional[Sequence[torch.Tensor]], measure: Callable,
                    rows: Sequence[str], cols: Sequence[str], degenerate: Optional[Dict[Tuple[str, str], str]] = None,
                    **options) -> np.ndarray:
    """Any float measure, one layer pair at a time (the fallback for measures without a Gram form).

    A UserError of one pair names that pair. ``acts2=None``: ``acts1`` against itself. ``degenerate``: a
    dict that receives ``{(row, col): reason}`` for the pairs where the measure is degenerate, whose value
    is then NaN (without it such a pair raises its :class:`src.similarity._prep.DegenerateMeasure`).
    """
    acts2 = acts1 if acts2 is None else acts2
    values = np.empty((len(acts1), len(acts2)))
    for i, x in enumerate(acts1):
        for j, y in enumerate(acts2):
            try:
                values[i, j] = float(measure(x, y, **options))
            except DegenerateMeasure as err:
                if degenerate is None:
                    raise DegenerateMeasure(err.measure, f"layers {rows[i]} (model 1) and {cols[j]} (model 2): "
                                                         f"{err.reason}", err.remedy, err.samples_needed) from err
                values[i, j] = np.nan
                degenerate[(rows[i], cols[j])] = err.reason
            except UserError as err:
                raise UserError(f"layers {rows[i]} (model 1) and {cols[j]} (model 2): {err}") from err
    return values
