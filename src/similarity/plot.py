"""Heatmaps of layer x layer similarity matrices (matplotlib, no window).

:func:`draw_heatmap` draws into any ``Axes`` (a notebook's, say); :func:`heatmap_figure` makes a
stand-alone figure on the Agg canvas without touching pyplot's state or backend, so scripts never
open or block on a window; :func:`save_heatmap` writes it as PNG (atomically, with the
provenance as PNG text metadata).
"""
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from src.results_io import atomic_write

#: Beyond this many rows/columns the tick labels are thinned out (every k-th layer is named).
MAX_LABELS = 60
#: Up to this many rows and columns each cell shows its value.
MAX_ANNOTATED = 12


def _ticks(labels: Sequence[str]):
    step = max(1, int(np.ceil(len(labels) / MAX_LABELS)))
    positions = list(range(0, len(labels), step))
    return positions, [labels[i] for i in positions]


def draw_heatmap(ax, values: np.ndarray, rows: Sequence[str], cols: Sequence[str], *, title: Optional[str] = None,
                 xlabel: str = "model 2", ylabel: str = "model 1", colorbar_label: str = "",
                 vmin: Optional[float] = None, vmax: Optional[float] = None, cmap: str = "magma",
                 annotate: Optional[bool] = None, pvalues: Optional[np.ndarray] = None, alpha: float = 0.05):
    """Draw ``values`` (rows: layers of model 1, bottom to top; columns: model 2, left to right).

    Layer names label the axes, a colour bar is added, small matrices get their values written in
    the cells (``annotate``; NaN cells, the degenerate ones, read ``n/a`` and are left blank), and with
    ``pvalues`` the cells with ``p >= alpha`` are marked ``n.s.``
    Returns the image artist.
    """
    values = np.asarray(values, dtype=float)
    image = ax.imshow(values, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    xpos, xlabels = _ticks(list(cols))
    ypos, ylabels = _ticks(list(rows))
    small = max(len(rows), len(cols)) <= 20
    ax.set_xticks(xpos, xlabels, rotation=90, fontsize=8 if small else 6)
    ax.set_yticks(ypos, ylabels, fontsize=8 if small else 6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if colorbar_label:
        bar.set_label(colorbar_label)
    if annotate is None:
        annotate = len(rows) <= MAX_ANNOTATED and len(cols) <= MAX_ANNOTATED
    if annotate:
        low, high = image.get_clim()
        middle = (low + high) / 2
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if not np.isfinite(values[i, j]):  # a degenerate cell (see SimilarityMatrix.degenerate)
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=6, color="grey")
                    continue
                text = f"{values[i, j]:.2f}"
                if pvalues is not None and pvalues[i, j] >= alpha:
                    text += "\nn.s."
                ax.text(j, i, text, ha="center", va="center", fontsize=6,
                        color="black" if values[i, j] > middle else "white")
    return image


def heatmap_figure(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], **options):
    """A stand-alone ``Figure`` (Agg canvas, not registered with pyplot) holding :func:`draw_heatmap`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only when drawing
    from matplotlib.figure import Figure

    side = 3.0 + 0.28 * min(max(len(rows), len(cols)), MAX_LABELS)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    FigureCanvasAgg(fig)
    draw_heatmap(fig.add_subplot(), values, rows, cols, **options)
    return fig


def save_heatmap(path, values: np.ndarray, rows: Sequence[str], cols: Sequence[str],
                 provenance: Optional[Dict[str, Any]] = None, dpi: int = 150, **options) -> Path:
    """Write :func:`heatmap_figure` as a PNG, atomically; ``provenance`` goes into its text metadata."""
    fig = heatmap_figure(values, rows, cols, **options)
    metadata = {"Software": "drfrank compare_layers"}
    if provenance is not None:
        metadata["Description"] = json.dumps(provenance, default=str)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, metadata=metadata))
