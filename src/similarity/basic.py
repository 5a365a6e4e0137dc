"""Elementwise measures: mean squared difference and the channel correlation matrix."""
import numpy as np
import torch

from src.errors import UserError
from src.similarity._prep import as_float, center64, check_finite, pair, pixel_rows, shape_str, to_tensor


def l2(x, y) -> float:
    """Mean squared difference ``mean((x - y)^2)`` over all elements, in float64.

    Needs identical shapes (the same neurons in the same order); a shape mismatch is a UserError
    naming both shapes. 0 for identical inputs.
    """
    x_t, y_t = to_tensor(x, "x"), to_tensor(y, "y")
    if tuple(x_t.shape) != tuple(y_t.shape):
        raise UserError(f"l2 needs activations of the same shape: x has shape {shape_str(x_t)}, "
                        f"y has shape {shape_str(y_t)}")
    if x_t.numel() == 0:
        raise UserError(f"l2 of empty activations (shape {shape_str(x_t)})")
    check_finite(x_t, "x")
    check_finite(y_t, "y")
    diff = x_t.to(torch.float64) - y_t.to(device=x_t.device, dtype=torch.float64)
    return as_float(diff.square().mean())


def corr(x, y) -> np.ndarray:
    """Pearson correlations between every channel of x and every channel of y: a C_x x C_y array.

    For feature maps (N x C x H x W) pixels count as samples: both are reshaped to (N*H*W, C), so
    they need the same N and spatial size; N x D inputs use the N samples. Centred in float64.
    A channel with zero variance (e.g. a dead ReLU) has no defined correlation; its row/column is
    0 (not NaN). Returns a numpy float64 array (a matrix, not a float).
    """
    xr, yr = pair(x, y, min_n=2, measure="corr", rows=pixel_rows)
    out = []
    for t in (xr, yr):
        tc = center64(t)
        dead = (t == t[:1]).all(dim=0)  # exactly constant channels (their centred values may be ~1e-17)
        norm = torch.linalg.vector_norm(tc, dim=0)
        out.append(torch.where(dead, 0.0, tc / torch.where(dead, 1.0, norm)))
    return (out[0].T @ out[1]).cpu().numpy()
