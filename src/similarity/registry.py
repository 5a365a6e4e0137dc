"""The measures: one :class:`Measure` record per command-line name, and lookup with a helpful error.

Every measure is called as ``MEASURES[name](x, y, **options)`` (``RECORDS[name].function``) with two
activation tensors (or numpy arrays) with the same number of samples N.

===============  ===============  =======================================================
name             returns          notes
===============  ===============  =======================================================
cka              float            linear CKA, biased HSIC (similarity, 1 = identical)
cka_debiased     float            linear CKA, unbiased HSIC; N >= 4
cka_rbf          float            RBF CKA; ``sigma_frac=0.8`` x median distance, per side
cka_minibatch    float            Nguyen et al.; ``batch_size=256``; N >= 4
dcka             float            deconfounded CKA; needs ``inputs=`` (UserError without)
cca              float            mean squared canonical correlation (R^2_CCA)
cca_mean_rho     float            mean canonical correlation
svcca            float            ``keep=0.99`` of the variance per side, then mean rho
pwcca            float            projection-weighted CCA (weights from x)
procrustes       float            squared Procrustes *distance* in [0, 2] (0 = identical)
lr               float            R^2 of predicting y from x (with intercept)
l2               float            mean squared difference, a *distance*; same shapes
corr             matrix           C_x x C_y numpy array of channel Pearson correlations
ps_inv           weights          {'w': (D_y, D_x), 'b': (D_y,)} least squares with bias
ls_orth          weights          same, W (semi-)orthogonal
ls_sum           weights_by_rank  {rank: {'w', 'b'}} for ranks 4, 8, 16 and D_y (full)
===============  ===============  =======================================================

Degenerate data are refused, never given a number (:class:`src.similarity._prep.DegenerateMeasure`;
rules in :mod:`src.similarity._prep`): fewer samples than the record's ``min_samples`` (3 for the
centred measures, whose every value is fixed with 2 samples; 4 for the unbiased HSIC), a constant
representation, ``rank_x + rank_y > N - 1`` for the canonical-correlation measures (svcca: its kept
directions), ``rank_x >= N - 1`` for lr. Matrices store NaN with the reason instead.
"""
from typing import List, Sequence
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from src.errors import UserError
from src.similarity._prep import MIN_SAMPLES, DegenerateMeasure, degenerate_reason
from src.similarity.basic import corr, l2
from src.similarity.cca import cca, cca_mean_rho, pwcca, svcca
from src.similarity.cka import cka, cka_debiased, cka_minibatch, cka_rbf, dcka
from src.similarity.hsic import BIASED, UNBIASED, HSICEstimator
from src.similarity.procrustes import procrustes
from src.similarity.regression import lr, ls_orth, ls_sum, ps_inv

RETURN_KINDS = ("float", "matrix", "weights", "weights_by_rank")
SCALES = ("unit", "similarity", "distance")


@dataclass(frozen=True)
class Measure:
    """Everything the project needs to know about one measure.

    - ``function(x, y, **options)``: the single-pair function;
    - ``family``: ``"cka"``, ``"cca"``, ``"procrustes"``, ``"regression"`` or ``"elementwise"``;
    - ``returns``: ``"float"``, ``"matrix"`` (numpy C_x x C_y), ``"weights"`` ({'w', 'b'} numpy) or
      ``"weights_by_rank"`` ({rank: {'w', 'b'}});
    - ``scale`` (float measures): ``"unit"`` (a similarity, 1 = identical, heatmaps on a fixed 0..1
      scale), ``"similarity"`` (larger = more similar, no fixed range) or ``"distance"`` (0 = identical);
    - ``needs_inputs``: called with ``inputs=`` (the network inputs, N x ...);
    - ``asymmetric``: the result depends on the order of the arguments;
    - ``gram``: the HSIC estimator of its Gram form (:mod:`src.similarity.hsic`): layer x layer
      matrices come from the stacked-Gram engine, with permutation tests and bootstrap intervals;
      ``None``: computed one pair at a time;
    - ``streams``: evaluated batch by batch (memory does not grow with N);
    - ``min_samples`` (property): the fewest samples with which the measure is informative (per batch
      for a streaming one), from :data:`src.similarity._prep.MIN_SAMPLES`, the one definition the
      functions, the scripts and the matrices all use.
    """

    name: str
    function: Callable
    family: str
    returns: str = "float"
    scale: Optional[str] = "unit"
    needs_inputs: bool = False
    asymmetric: bool = False
    gram: Optional[HSICEstimator] = None
    streams: bool = False

    def __post_init__(self):
        if self.returns not in RETURN_KINDS:
            raise ValueError(f"{self.name}: returns must be one of {RETURN_KINDS}")
        if (self.scale is None) != (self.returns != "float") or (self.scale is not None and self.scale not in SCALES):
            raise ValueError(f"{self.name}: float measures have a scale in {SCALES}, the others none")
        if self.streams and self.gram is None:
            raise ValueError(f"{self.name}: only measures with a Gram form stream")

    @property
    def min_samples(self) -> int:
        return MIN_SAMPLES[self.name]

    @property
    def distance(self) -> bool:
        return self.scale == "distance"

    @property
    def unit_scale(self) -> bool:
        return self.scale == "unit"


_WEIGHTS = dict(family="regression", scale=None, asymmetric=True)

#: One record per command-line name (adding a measure: its own module plus one line here).
RECORDS: Dict[str, Measure] = {m.name: m for m in (
    Measure("cka", cka, "cka", gram=BIASED),
    Measure("cka_debiased", cka_debiased, "cka", gram=UNBIASED),
    Measure("cka_rbf", cka_rbf, "cka"),
    Measure("cka_minibatch", cka_minibatch, "cka", gram=UNBIASED, streams=True),
    Measure("dcka", dcka, "cka", needs_inputs=True),
    Measure("cca", cca, "cca"),
    Measure("cca_mean_rho", cca_mean_rho, "cca"),
    Measure("svcca", svcca, "cca"),
    Measure("pwcca", pwcca, "cca", asymmetric=True),
    Measure("procrustes", procrustes, "procrustes", scale="distance"),
    Measure("lr", lr, "regression", scale="similarity", asymmetric=True),
    Measure("l2", l2, "elementwise", scale="distance"),
    Measure("corr", corr, "elementwise", returns="matrix", scale=None, asymmetric=True),
    Measure("ps_inv", ps_inv, returns="weights", **_WEIGHTS),
    Measure("ls_orth", ls_orth, returns="weights", **_WEIGHTS),
    Measure("ls_sum", ls_sum, returns="weights_by_rank", **_WEIGHTS),
)}

# Views of the records under the names other modules import.
MEASURES: Dict[str, Callable] = {name: m.function for name, m in RECORDS.items()}
RETURNS: Dict[str, str] = {name: m.returns for name, m in RECORDS.items()}
FLOAT_MEASURES = tuple(name for name, m in RECORDS.items() if m.returns == "float")
DISTANCES = frozenset(name for name, m in RECORDS.items() if m.distance)
NEEDS_INPUTS = frozenset(name for name, m in RECORDS.items() if m.needs_inputs)
ASYMMETRIC = frozenset(name for name, m in RECORDS.items() if m.asymmetric)
GRAM_MEASURES = tuple(name for name, m in RECORDS.items() if m.gram is not None)


def unknown(name: str) -> UserError:
    return UserError(f"unknown similarity measure {name!r}; choose one of {', '.join(RECORDS)}")


def get_record(name: str) -> Measure:
    """The record registered as ``name``; an unknown name is a UserError listing the valid ones."""
    try:
        return RECORDS[name]
    except (KeyError, TypeError):
        raise unknown(name) from None


def get_measure(name: str) -> Callable:
    """The function registered as ``name``; an unknown name is a UserError listing the valid ones."""
    return get_record(name).function


def check_sample_count(measure: str, n: int, option: str = "") -> None:
    """DegenerateMeasure when ``n`` samples are fewer than ``measure`` needs (its record's ``min_samples``);
    ``option`` (e.g. ``--samples``) names the script option that sets the count, for the advice."""
    found = degenerate_reason(get_record(measure).name, n)
    if found is not None:
        raise DegenerateMeasure(measure, *found, samples_option=option or None)


def check_minibatch_size(measure: str, batch_size: int) -> None:
    """A streaming measure (cka_minibatch) estimates one HSIC per batch: ``-b`` must give each batch enough samples."""
    record = RECORDS.get(measure)
    if record is None or not record.streams:
        return
    needed = record.gram.min_n
    if batch_size < needed:
        raise UserError(f"{measure} computes one {record.gram.name} HSIC per batch of -b/--batch-size samples and "
                        f"needs at least {needed} per batch, got {batch_size}; use -b {needed} or more (256 is the default)")


#: The name that asks for every measure (``compare_nets.py ... all``).
ALL = "all"


def measure_names(names: Sequence[str]) -> List[str]:
    """The registry names asked for (``all`` = every measure), without repeats; unknown names are an error."""
    chosen: List[str] = []
    for name in names:
        for item in (MEASURES if name == ALL else [name]):
            get_measure(item)
            if item not in chosen:
                chosen.append(item)
    return chosen
