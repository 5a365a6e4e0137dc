"""Command-line names of the measures, what each returns, and lookup with a helpful error.

Every entry is called as ``MEASURES[name](x, y, **options)`` with two activation tensors (or numpy
arrays) with the same number of samples N.

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
"""
from typing import Callable, Dict

from src.errors import UserError
from src.similarity.basic import corr, l2
from src.similarity.cca import cca, cca_mean_rho, pwcca, svcca
from src.similarity.cka import cka, cka_debiased, cka_minibatch, cka_rbf, dcka
from src.similarity.procrustes import procrustes
from src.similarity.regression import lr, ls_orth, ls_sum, ps_inv

MEASURES: Dict[str, Callable] = {
    "cka": cka,
    "cka_debiased": cka_debiased,
    "cka_rbf": cka_rbf,
    "cka_minibatch": cka_minibatch,
    "dcka": dcka,
    "cca": cca,
    "cca_mean_rho": cca_mean_rho,
    "svcca": svcca,
    "pwcca": pwcca,
    "procrustes": procrustes,
    "lr": lr,
    "l2": l2,
    "corr": corr,
    "ps_inv": ps_inv,
    "ls_orth": ls_orth,
    "ls_sum": ls_sum,
}

#: What each measure returns: "float", "matrix" (numpy C_x x C_y), "weights" ({'w', 'b'} numpy)
#: or "weights_by_rank" ({rank: {'w', 'b'}}).
RETURNS: Dict[str, str] = {name: "float" for name in MEASURES}
RETURNS.update({"corr": "matrix", "ps_inv": "weights", "ls_orth": "weights", "ls_sum": "weights_by_rank"})

#: Measures returning a single float, usable for layer x layer matrices.
FLOAT_MEASURES = tuple(name for name, kind in RETURNS.items() if kind == "float")

#: Float measures where smaller means more similar (0 = identical); all other floats are similarities.
DISTANCES = frozenset({"procrustes", "l2"})

#: Measures that need the network inputs as ``inputs=`` (N x ...).
NEEDS_INPUTS = frozenset({"dcka"})

#: Measures whose result depends on the order of the arguments.
ASYMMETRIC = frozenset({"pwcca", "lr", "corr", "ps_inv", "ls_orth", "ls_sum"})


def get_measure(name: str) -> Callable:
    """The function registered as ``name``; an unknown name is a UserError listing the valid ones."""
    try:
        return MEASURES[name]
    except KeyError:
        raise UserError(f"unknown similarity measure {name!r}; choose one of {', '.join(MEASURES)}") from None
