"""Input handling shared by every measure: conversion, flattening, checks, float64 centring.

Conventions (all measures):

- Inputs are torch tensors or numpy arrays (anything ``torch.as_tensor`` takes). The first axis is
  the sample axis (N). ``N x D`` is used as is, ``N x C x H x W`` (or any ``N x ...``) is flattened
  per sample with ``reshape(N, -1)``; a 1-D input is ``N x 1``. The *pixel* measures (``corr`` and
  the closed-form maps) instead use :func:`pixel_rows`: pixels are samples, channels are features.
- Mismatched N is a :class:`UserError` naming both shapes; NaN/inf in an input is a UserError.
- The second tensor (and ``inputs`` of dCKA) is moved to the first one's device.
- Data are centred *before* any product is formed: the column mean is computed and subtracted
  first, which removes the catastrophic cancellation of centring an uncentred float32 Gram
  afterwards (an offset of 1e4 on float32 data makes such Grams useless). The linear CKAs
  (:mod:`src.similarity.hsic`) then multiply float32 data in float32 (float64 data in float64) and
  sum every product in float64; every other measure converts to float64 first and works in float64
  throughout. (MPS has no float64 and is not supported.)
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from src.errors import UserError

EPS64 = float(torch.finfo(torch.float64).eps)
EPS32 = float(torch.finfo(torch.float32).eps)

METHODS = ("auto", "gram", "feature")


def to_tensor(x, name: str = "x") -> torch.Tensor:
    """``x`` as a detached real tensor (numpy arrays and nested lists are converted)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as err:
            raise UserError(f"{name} is not a numeric array ({type(x).__name__}): {err}") from None
    if t.is_complex():
        raise UserError(f"{name} is complex ({t.dtype}); similarity measures need real activations")
    if t.dtype == torch.bool:
        t = t.to(torch.float64)
    return t


def shape_str(t) -> str:
    return "x".join(str(s) for s in tuple(t.shape)) if len(t.shape) else "scalar"


def flatten(x, name: str = "x") -> torch.Tensor:
    """``x`` as an ``N x D`` tensor (original dtype): ``reshape(N, -1)``; 1-D means ``N x 1``."""
    t = to_tensor(x, name)
    if t.dim() == 0:
        raise UserError(f"{name} is a scalar; expected activations of shape N x D or N x C x H x W")
    t = t.reshape(-1, 1) if t.dim() == 1 else t.reshape(t.shape[0], -1)
    if t.shape[0] == 0:
        raise UserError(f"{name} has no samples (shape {shape_str(t)})")
    if t.shape[1] == 0:
        raise UserError(f"{name} has no features per sample (shape {shape_str(t)})")
    return t


def pixel_rows(x, name: str = "x") -> torch.Tensor:
    """Rows = samples (and pixels), columns = channels: ``N x C x ...`` -> ``(N*H*W) x C``.

    This is the layout of a 1x1 convolution: for feature maps every pixel of every sample is one
    observation of the C channels. ``N x D`` stays ``N x D``; 1-D means ``N x 1``.
    """
    t = to_tensor(x, name)
    if t.dim() == 0:
        raise UserError(f"{name} is a scalar; expected activations of shape N x D or N x C x H x W")
    if t.dim() == 1:
        t = t.reshape(-1, 1)
    elif t.dim() > 2:
        t = t.movedim(1, -1).reshape(-1, t.shape[1])
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise UserError(f"{name} is empty (shape {shape_str(t)})")
    return t


def check_finite(t: torch.Tensor, name: str) -> None:
    """UserError when ``t`` holds NaN or inf. The sum is finite only if every element is (a NaN or inf
    reaches it), and is one fast reduction; only a sum that overflows needs the element-wise test."""
    if not t.is_floating_point() or bool(torch.isfinite(t.sum())):
        return
    if not bool(torch.isfinite(t).all()):
        raise UserError(f"{name} contains NaN or inf values; check the activations (or the model) first")


def same_rows(a: torch.Tensor, b: torch.Tensor, a_orig, b_orig, names: Sequence[str], what: str = "samples"):
    if a.shape[0] != b.shape[0]:
        raise UserError(f"{names[0]} and {names[1]} must have the same number of {what}: "
                        f"{names[0]} has shape {shape_str(a_orig)}, {names[1]} has shape {shape_str(b_orig)}")


def pair(x, y, names: Sequence[str] = ("x", "y"), min_n: int = 1, measure: str = "this measure",
         rows=flatten) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both inputs as row matrices (original dtypes) on ``x``'s device, with N and finiteness checked."""
    x_t, y_t = to_tensor(x, names[0]), to_tensor(y, names[1])
    xf, yf = rows(x_t, names[0]), rows(y_t, names[1])
    same_rows(xf, yf, x_t, y_t, names, "samples" if rows is flatten else "rows (samples x pixels)")
    if yf.device != xf.device:
        yf = yf.to(xf.device)
    if xf.shape[0] < min_n:
        raise UserError(f"{measure} needs at least {min_n} samples, got {xf.shape[0]} "
                        f"(shapes {shape_str(x_t)} and {shape_str(y_t)})")
    check_finite(xf, names[0])
    check_finite(yf, names[1])
    return xf, yf


def extra(z, n: int, device, name: str, other_shape) -> torch.Tensor:
    """A third representation (e.g. dCKA's ``inputs``) flattened and checked against N."""
    z_t = to_tensor(z, name)
    zf = flatten(z_t, name)
    if zf.shape[0] != n:
        raise UserError(f"{name} must have the same number of samples as the activations: "
                        f"{name} has shape {shape_str(z_t)}, the activations have shape {shape_str(other_shape)}")
    check_finite(zf, name)
    return zf.to(device)


def is_constant(t: torch.Tensor) -> bool:
    """True when every row equals the first one exactly (zero variance; checked on the raw data)."""
    return bool((t == t[:1]).all())


def require_varies(t: torch.Tensor, name: str, measure: str) -> None:
    if is_constant(t):
        raise UserError(f"{name} is constant across samples (all {t.shape[0]} rows equal): "
                        f"{measure} is undefined for a zero-variance representation")


def center64(t: torch.Tensor) -> torch.Tensor:
    """Float64 copy of ``t`` with the float64 column mean subtracted (centre *before* any product)."""
    if t.dtype == torch.float64:
        return t - t.mean(dim=0, keepdim=True)
    t = t.to(torch.float64)  # a fresh copy: centre it in place
    return t.sub_(t.mean(dim=0, keepdim=True))


def unit_frobenius(t: torch.Tensor) -> torch.Tensor:
    """``t / ||t||_F`` *in place* (for the fresh output of :func:`center64`; scale-invariant measures
    use it to keep fourth powers far from over/underflow)."""
    return t.div_(torch.linalg.matrix_norm(t))


def input_eps(t: torch.Tensor) -> float:
    """Machine epsilon of the precision the data were given in (float32 or narrower -> float32's).

    Integer and float64 data count as float64-exact.
    """
    return EPS64 if (t.dtype == torch.float64 or not t.is_floating_point()) else EPS32


#: Default relative rank tolerance for float32 (or narrower) data: directions whose singular value
#: is below 1e-5 of the largest (variance ratio 1e-10) are float32 rounding noise (a linear
#: dependency computed in float32 leaves singular values of a few eps32 ~ 1e-7 .. 1e-6 relative).
FLOAT32_RTOL = 1e-5


def default_rtol(n: int, d: int, t: torch.Tensor) -> float:
    """Relative singular-value tolerance for the numerical rank of centred data.

    ``max(N, D) * eps64`` (numpy's ``matrix_rank`` rule for float64, i.e. the accuracy of the
    float64 SVD) for float64/integer data; at least :data:`FLOAT32_RTOL` for float32 or narrower
    data, whose own rounding is far above float64's. Not ``max(N, D) * eps32``: that grows with N
    and would discard real directions for large N (or all of them for pixel rows).
    """
    rtol = max(n, d) * EPS64
    if input_eps(t) > EPS64:
        rtol = max(rtol, FLOAT32_RTOL)
    return rtol


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def use_feature_form(n: int, dims: Sequence[int], method: str) -> bool:
    """Gram (N x N) or feature-space (D x D') products, by flop count unless forced.

    Feature form: the D_a x D_b cross products of every pair of representations, ``N * sum D_a D_b``.
    Gram form: one N x N Gram per representation, ``N^2 * sum D_a``.
    """
    check_method(method)
    if method != "auto":
        return method == "feature"
    dims = list(dims)
    feature = sum(a * b for i, a in enumerate(dims) for b in dims[i:])
    gram = n * sum(dims)
    return feature <= gram


def as_float(t: torch.Tensor) -> float:
    return float(t.item())


def rtol_or_default(rtol: Optional[float], n: int, d: int, t: torch.Tensor) -> float:
    if rtol is None:
        return default_rtol(n, d, t)
    if not (0 <= rtol < 1):
        raise UserError(f"rtol must be in [0, 1), got {rtol}")
    return float(rtol)


# ---------------------------------------------------------------------------------------------
# degenerate measures: when a value says nothing about the data
# ---------------------------------------------------------------------------------------------
#
# A measure is *degenerate* on given data when its value is fixed by the sample size or the
# dimensions alone (whatever the data, e.g. R^2_CCA = 1 once the features outnumber the samples), or
# is undefined (0/0: a constant representation). Such a value is never returned: the single-pair
# functions raise :class:`DegenerateMeasure` (a UserError carrying the reason), the layer x layer
# matrices and stitch results store NaN with the reason beside it. The rules, all decided here:
#
# - too few samples (:data:`MIN_SAMPLES`, one number per measure, used by the functions, the registry,
#   compare_nets.py, compare_layers.py and the matrices alike): with N = 2 samples every centred
#   representation is a multiple of the same vector (1, -1)/sqrt(2), so every centred Gram is a multiple
#   of one rank-1 matrix: CKA (linear, RBF) = 1, every canonical correlation = 1, R^2 = 1, Procrustes = 0,
#   whatever the data. N = 3 is the first informative sample size of those measures; the unbiased HSIC
#   (cka_debiased, cka_minibatch per batch) is defined from N = 4 on (its normaliser is N(N - 3)).
# - a constant representation (all rows equal): its centred data are 0, every one of these measures is 0/0.
# - canonical correlations (cca, cca_mean_rho, pwcca; svcca on the directions it keeps): centred data
#   lie in the (N - 1)-dimensional space orthogonal to the ones vector, so column spaces of ranks r_x and
#   r_y share at least r_x + r_y - (N - 1) dimensions, and each shared dimension is a canonical
#   correlation of exactly 1 whatever the data. Degenerate when r_x + r_y > N - 1 (with r_x = N - 1,
#   e.g. D_x >= N - 1 generic features, *all* of them are 1). Below that the value is data-dependent,
#   with the known small-sample bias (independent Gaussian data: E[R^2_CCA] = max(r_x, r_y) / (N - 1)).
# - regression (lr, and the R^2 of the closed-form maps): the least-squares prediction of centred Y is
#   its projection onto the column space of centred X; when r_x = N - 1 that space is every centred
#   direction, so every Y is predicted exactly and R^2 = 1 whatever the data. Degenerate when
#   r_x >= N - 1. (Below that, independent data give E[R^2] = r_x / (N - 1).)
# - Procrustes: the distance compares the shapes of the two N-point configurations; only N = 2 forces
#   them to agree (two points are always similar), so the rule is the sample minimum (N >= 3).
# Ranks are numerical ranks, with the tolerance the measure itself uses (see :func:`default_rtol`).

#: The fewest samples with which each measure (registry name) is informative; see the notes above.
MIN_SAMPLES: Dict[str, int] = {
    "cka": 3, "cka_debiased": 4, "cka_rbf": 3, "cka_minibatch": 4, "dcka": 3,
    "cca": 3, "cca_mean_rho": 3, "svcca": 3, "pwcca": 3, "procrustes": 3, "lr": 3,
    "l2": 1, "corr": 2, "ps_inv": 1, "ls_orth": 1, "ls_sum": 1,
}
CCA_MEASURES = ("cca", "cca_mean_rho", "svcca", "pwcca")
REGRESSION_MEASURES = ("lr", "least-squares R^2")

_WIDE = "a layer with fewer features (e.g. a pooled one)"
#: What else helps, besides more samples (the remedies are phrased to follow "use").
_REMEDY = {
    **{name: f"{_WIDE}, or svcca with a smaller keep (fewer directions per side)" for name in CCA_MEASURES},
    "svcca": f"a smaller keep (fewer directions per side), or {_WIDE}",
    "lr": f"{_WIDE} as x (svcca and CKA compare wide layers)",
    "least-squares R^2": "fewer input features",
}


class DegenerateMeasure(UserError):
    """A measure whose value on these data would be fixed by the dimensions or undefined (see the notes
    above). ``measure``: the registry name (or several, joined); ``reason``: why (features, ranks,
    samples); ``remedy``: what else helps, phrased to follow "use"; ``samples_needed``: a sample count
    that lifts the degeneracy, when more samples help; ``samples_option``: the script option that sets
    the sample count (e.g. ``--max-samples``), named in the advice. ``parts``: several such errors
    reported as one (see :func:`combine_degenerate`)."""

    def __init__(self, measure: str, reason: str, remedy: str = "", samples_needed: Optional[int] = None,
                 samples_option: Optional[str] = None, parts: Sequence["DegenerateMeasure"] = ()):
        self.measure, self.reason, self.remedy = measure, reason, remedy
        self.samples_needed, self.samples_option, self.parts = samples_needed, samples_option, tuple(parts)
        super().__init__(self.message())

    def advice(self) -> str:
        more = ""
        if self.samples_needed is not None:
            more = (f"{self.samples_option} {self.samples_needed} or more" if self.samples_option else
                    f"more samples (at least {self.samples_needed})")
        return ", or else ".join(part for part in (more, self.remedy) if part)

    def message(self) -> str:
        """The one-line message: what is degenerate, why, and what to do."""
        if self.parts:
            return "; ".join(part.message() for part in self.parts)
        verb = "are" if ", " in self.measure or " and " in self.measure else "is"
        advice = self.advice()
        return f"{self.measure} {verb} degenerate here: {self.reason}" + (f"; use {advice}" if advice else "")

    def with_option(self, samples_option: Optional[str]) -> "DegenerateMeasure":
        """The same error with ``samples_option`` named in the advice (for a script's message)."""
        return DegenerateMeasure(self.measure, self.reason, self.remedy, self.samples_needed, samples_option,
                                 [part.with_option(samples_option) for part in self.parts])

    def __reduce__(self):
        return type(self), (self.measure, self.reason, self.remedy, self.samples_needed, self.samples_option,
                            self.parts)


def combine_degenerate(errors: Sequence[DegenerateMeasure], samples_option: Optional[str] = None) -> DegenerateMeasure:
    """Several measures' DegenerateMeasure as one (one message line); measures with the same reason and
    remedy are named together ("cca, cca_mean_rho and pwcca are degenerate here: ...")."""
    groups: Dict[Tuple[str, str, Optional[int]], List[str]] = {}
    for err in errors:
        groups.setdefault((err.reason, err.remedy, err.samples_needed), []).append(err.measure)
    parts = []
    for (reason, remedy, needed), names in groups.items():
        joined = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        parts.append(DegenerateMeasure(joined, reason, remedy, needed, samples_option))
    if len(parts) == 1:
        return parts[0]
    return DegenerateMeasure(", ".join(err.measure for err in errors), "; ".join(p.reason for p in parts),
                             samples_option=samples_option, parts=parts)


class DegenerateWarning(UserWarning):
    """Issued where degenerate values are stored as NaN instead of raised (matrices, stitch results)."""


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def degenerate_reason(measure: str, n: int, *, constant: Sequence[str] = (),
                      ranks: Optional[Tuple[int, ...]] = None, widths: Optional[Tuple[int, ...]] = None,
                      min_samples: Optional[int] = None) -> Optional[Tuple[str, str, Optional[int]]]:
    """Why ``measure`` (a registry name) is degenerate on N = ``n`` samples, or None when it is not.

    ``constant``: names of the representations that are constant across samples. ``ranks``: the
    numerical ranks of the centred representations the measure uses (``(r_x, r_y)``; for regression
    ``(r_x,)``), ``widths`` their numbers of features. ``min_samples`` overrides :data:`MIN_SAMPLES`
    (an option that changes the estimator, e.g. ``cka_rbf(debiased=True)``). Returns
    ``(reason, remedy, samples_needed)`` (see :class:`DegenerateMeasure`). The one place of the rules listed
    in the notes above.
    """
    need = MIN_SAMPLES.get(measure, 1) if min_samples is None else min_samples
    if n < need:
        why = f"{_count(n, 'sample')} {'is' if n == 1 else 'are'} too few (at least {need} samples are needed"
        if n == 2 and need == 3:
            why += ("; with 2 samples every centred representation is a multiple of the same vector, so the "
                    "value is fixed whatever the data")
        why += ")"
        return why, "", need
    if constant:
        names = " and ".join(constant)
        return (f"{names} {'is' if len(constant) == 1 else 'are'} constant across samples (all {n} rows equal), "
                f"so {measure} is 0/0 (undefined for a zero-variance representation)",
                "another layer (this one does not vary on these inputs)", None)
    if ranks is None:
        return None
    feats = widths or ranks
    if measure in CCA_MEASURES:
        r_x, r_y = ranks
        forced = r_x + r_y - (n - 1)
        if forced <= 0:
            return None
        k = min(r_x, r_y)
        side = ((lambda r: f"{_count(r, 'direction')} kept") if measure == "svcca" else
                (lambda r: f"centred rank {r}"))
        what = (f"x has {_count(feats[0], 'feature')} ({side(r_x)}) and y {_count(feats[1], 'feature')} "
                f"({side(r_y)}) on {_count(n, 'sample')}")
        forced_text = "all" if forced >= k else f"{min(forced, k)} of the"
        return (f"{what}: {r_x} + {r_y} = {r_x + r_y} > N - 1 = {n - 1}, so {forced_text} {k} canonical "
                f"correlations are 1 whatever the data",
                _REMEDY[measure], sum(feats) + 1)
    if measure in REGRESSION_MEASURES:
        (r_x,) = ranks[:1]
        if r_x < n - 1:
            return None
        return (f"x has {_count(feats[0], 'feature')} (centred rank {r_x}) on {_count(n, 'sample')}: its centred "
                f"rank reaches N - 1 = {n - 1}, so every y is predicted exactly and R^2 = 1 whatever the data",
                _REMEDY[measure], feats[0] + 2)
    return None


def check_degenerate(measure: str, n: int, **facts) -> None:
    """Raise :class:`DegenerateMeasure` when :func:`degenerate_reason` finds a reason."""
    found = degenerate_reason(measure, n, **facts)
    if found is not None:
        raise DegenerateMeasure(measure, *found)


def constant_names(named: Sequence[Tuple[str, torch.Tensor]]) -> List[str]:
    """The names of the representations (``(name, rows)`` pairs) that are constant across samples."""
    return [name for name, t in named if is_constant(t)]


def measure_pair(x, y, measure: str, names: Sequence[str] = ("x", "y"), rows=flatten,
                 min_samples: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`pair` plus the sample-count and constant-representation rules of ``measure`` (a registry name)."""
    xf, yf = pair(x, y, names, measure=measure, rows=rows)
    check_degenerate(measure, xf.shape[0], constant=constant_names(list(zip(names, (xf, yf)))),
                     min_samples=min_samples)
    return xf, yf
