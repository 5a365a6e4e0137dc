"""Numbers read off a stitch matrix (rows: front layers, columns: end layers).

Layers are placed at proportional depth: the i-th of I selected layers (counting from 0) at
``i / (I - 1)`` (0 for the first, 1 for the last; with the ``blocks`` preset, i is the number of
blocks before the layer and I - 1 the number of blocks). The *proportional diagonal* joins
(0, 0) and (1, 1). The triangle of Hernandez et al. (2022): a front layer stitches well into every
end layer at or before its own depth, so the cells on or below the diagonal (end depth
<= front depth) have a higher mean accuracy than the cells above it.
"""
from typing import Dict

import numpy as np
import pandas as pd


def proportional_depths(n: int) -> np.ndarray:
    """Depths ``i / (n - 1)`` of n layers (a single layer sits at 0)."""
    return np.arange(n) / (n - 1) if n > 1 else np.zeros(n)


def on_or_below_diagonal(n_senders: int, n_receivers: int) -> np.ndarray:
    """Boolean (front_layers x end_layers): end depth <= front depth, compared exactly in integers."""
    i = np.arange(n_senders)[:, None] * max(n_receivers - 1, 0)
    j = np.arange(n_receivers)[None, :] * max(n_senders - 1, 0)
    return j <= i


def triangle_statistic(matrix) -> Dict[str, float]:
    """Mean of the cells on or below the proportional diagonal against the mean of those above it."""
    values = np.asarray(matrix, dtype=float)
    below = on_or_below_diagonal(*values.shape)
    low, high = values[below], values[~below]
    mean_below = float(np.nanmean(low)) if low.size else float("nan")
    mean_above = float(np.nanmean(high)) if high.size else float("nan")
    return {"mean_on_or_below": mean_below, "mean_above": mean_above, "difference": mean_below - mean_above,
            "cells_on_or_below": int(low.size), "cells_above": int(high.size)}


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally shaped matrices, cell by cell (ties get mean ranks)."""
    x = pd.Series(np.asarray(a, dtype=float).ravel())
    y = pd.Series(np.asarray(b, dtype=float).ravel())
    if x.size != y.size:
        raise ValueError(f"matrices of {x.size} and {y.size} cells")
    return float(x.rank().corr(y.rank()))
