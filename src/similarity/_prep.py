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
from typing import Optional, Sequence, Tuple

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
