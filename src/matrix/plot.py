"""``matrix.png``: the stitch matrices beside the CKA matrix, front layers as rows, the proportional diagonal drawn.

By layer index every cell has the same size and the diagonal joins the corner cells' centres; with
``depth_axes`` cells sit at proportional depth (i/(I-1), j/(J-1)) on [0, 1] axes, so matrices of
networks of different lengths can be compared by eye.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from src.results_io import write_figure
from src.similarity.plot import draw_heatmap
from src.matrix.stats import proportional_depths


def _edges(depths: np.ndarray) -> np.ndarray:
    if len(depths) == 1:
        return np.array([-0.5, 0.5])
    mid = (depths[1:] + depths[:-1]) / 2
    return np.concatenate([[depths[0] - (mid[0] - depths[0])], mid, [depths[-1] + (depths[-1] - mid[-1])]])


def draw_matrix(ax, frame: pd.DataFrame, title: str, depth_axes: bool = False, vmin: Optional[float] = 0.0,
                vmax: Optional[float] = 1.0, colorbar_label: str = "", labels: Optional[Tuple[Sequence[str], Sequence[str]]] = None):
    """One heatmap of ``frame`` (rows: front layers, bottom to top) with the proportional diagonal."""
    rows, cols = labels or (list(frame.index), list(frame.columns))
    values = frame.to_numpy(dtype=float)
    if not depth_axes:
        draw_heatmap(ax, values, rows, cols, title=title, xlabel="end layer", ylabel="front layer",
                     colorbar_label=colorbar_label, vmin=vmin, vmax=vmax, cmap="viridis")
        ax.plot([0, len(cols) - 1], [0, len(rows) - 1], color="white", linestyle="--", linewidth=1)
        return
    ys, xs = proportional_depths(len(rows)), proportional_depths(len(cols))
    image = ax.pcolormesh(_edges(xs), _edges(ys), values, cmap="viridis", vmin=vmin, vmax=vmax)
    ax.plot([0, 1], [0, 1], color="white", linestyle="--", linewidth=1)
    ax.set_xticks(xs, cols, rotation=90, fontsize=7)
    ax.set_yticks(ys, rows, fontsize=7)
    ax.set_xlabel("end layer (proportional depth)")
    ax.set_ylabel("front layer (proportional depth)")
    ax.set_title(title, fontsize=10)
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if colorbar_label:
        bar.set_label(colorbar_label)


def save_matrix_png(path, panels: List[Tuple[str, pd.DataFrame, str]], depth_axes: bool = False,
                    labels: Optional[Tuple[Sequence[str], Sequence[str]]] = None, suptitle: str = "",
                    provenance: Optional[Dict[str, Any]] = None, dpi: int = 130):
    """Write the panels ``(title, frame, colour-bar label)`` side by side as one PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = panels[0][1].shape
    side = 2.5 + 0.35 * max(n_rows, n_cols)
    fig = Figure(figsize=((side + 1.2) * len(panels), side + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (title, frame, label) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        draw_matrix(ax, frame, title, depth_axes, colorbar_label=label, labels=labels)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return write_figure(path, fig, "drfrank stitch_matrix", provenance, dpi)

