"""Image generation: a front layer stitched into the end network's input (Hernandez et al. 2022, Figure 6).

``input`` (:data:`~src.stitching.cut.INPUT_LAYER`) is a valid end (end) layer: the stitch's
output replaces the image the end sees, so its shape is the input's (e.g. 1 x 32 x 32 for
Fashion-MNIST) and the stitch kinds decide the map as for any other pair of shapes (a 2 x 2 map into
32 x 32: nearest upsampling by 16 + 1x1 convolution; 13 x 13: resampling + 1x1 convolution; a vector:
linear + reshape). Trained with ``--objective task`` the stitch makes whatever image the end
classifies well; with ``--objective mse`` it regresses the real image (the least-squares fit
``ps_inv`` is always that regression).

Every result whose end layer is ``input`` holds ``images``: the first :data:`GRID_SAMPLES` test images
and what the trained and the least-squares stitches generate from them, de-normalised to pixel range
[0, 1] with the per-channel mean and std its loaders normalise with (``dataset_info(dataset).normalization``;
an ``imagefolder:DIR``'s are computed from its images or given in its name).
``stitch_nets.py ... LAYER input`` writes ``<LAYER>-input.png`` beside its pickle, ``stitch_matrix.py
... --end-layers input`` writes ``images.png``: one grid per front layer, the real images in the
first row.

Refused with one line (:func:`check_input_stitch`): ``input`` as a front layer (a stitch
from the raw image is not a stitch between representations), and ``input`` as an end for a
dataset without per-channel mean/std (``celeba``: multi-label face attributes read from disk at
224 x 224, normalised by ``x * 255 - 117``; data given from Python, whose normalisation is the user's own;
image generation is supported for the in-memory image datasets mnist, fashion, cifar10, cifar100 and
``imagefolder:DIR``).
"""
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from src.data import DATASET_NAMES, NORMALIZATION, dataset_info, is_imagefolder_name
from src.errors import UserError
from src.stitching.cut import INPUT_LAYER
from src.results_io import write_figure

GRID_SAMPLES = 8


def check_input_stitch(dataset: str, front_layers: Sequence[str], end_layers: Sequence[str]) -> None:
    """``input`` only as an end layer, and only for a dataset whose images can be shown (before any work)."""
    if INPUT_LAYER in front_layers:
        raise UserError(f"'{INPUT_LAYER}' can only be an end layer, where the stitch generates the image "
                        f"the end sees; choose a front layer of the network (see layer_info.py)")
    if INPUT_LAYER in end_layers and normalization_of(dataset) is None:
        raise UserError(f"stitching into '{INPUT_LAYER}' makes an image grid, which needs a dataset of images with "
                        f"per-channel mean/std ({', '.join(NORMALIZATION)} or imagefolder:DIR); {dataset} has none: "
                        f"choose an end layer of the network")


def normalization_of(dataset: str) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
    """The per-channel ``(mean, std)`` the loaders of ``dataset`` normalise with; None where there is none.

    None for celeba (its own transform) and for names that are no dataset's (data given from Python);
    an ``imagefolder:`` name is looked up, so a problem with the folder is its own UserError.
    """
    if not is_imagefolder_name(dataset) and dataset not in DATASET_NAMES:
        return None
    return dataset_info(dataset).normalization


def to_pixels(x: torch.Tensor, dataset: str) -> np.ndarray:
    """Normalised images ``N x C x H x W`` back to pixel range [0, 1] (clipped), as float32 numpy."""
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in normalization_of(dataset))
    return (x.detach().float().cpu() * std + mean).clamp(0, 1).numpy()


@torch.no_grad()
def sample_images(frank, ps_inv_stitch, loader: Iterable, dataset: str, n: int = GRID_SAMPLES) -> Dict[str, Any]:
    """The first ``n`` images of ``loader`` and the trained and least-squares stitches' images of them, in pixels."""
    frank.eval()
    x, _ = next(iter(loader))
    x = x[:n]
    front = frank.front(x)
    return {"samples": list(range(x.shape[0])), "real": to_pixels(x, dataset),
            "trans": to_pixels(frank.stitch(front), dataset), "ps_inv": to_pixels(ps_inv_stitch(front), dataset)}


def montage(rows: Sequence[np.ndarray], gap: int = 1) -> np.ndarray:
    """Rows of images (each ``n x C x H x W``) tiled into one ``H' x W' x C`` array, white gaps between them."""
    n, c, h, w = rows[0].shape
    out = np.ones((len(rows) * (h + gap) - gap, n * (w + gap) - gap, c), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = image.transpose(1, 2, 0)
    return out


def save_image_grid(path, grids: List[Tuple[str, List[Tuple[str, np.ndarray]]]], suptitle: str = "",
                    provenance: Optional[Dict[str, Any]] = None, dpi: int = 130):
    """One panel per ``(title, [(row label, images), ...])`` stacked vertically, written atomically as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows = sum(len(rows) for _, rows in grids)
    n_cols = grids[0][1][0][1].shape[0]
    fig = Figure(figsize=(1.0 + 0.9 * n_cols, 0.6 + 0.95 * n_rows + 0.35 * len(grids)), layout="constrained")
    FigureCanvasAgg(fig)
    heights = [len(rows) for _, rows in grids]
    for ax, (title, rows) in zip(fig.subplots(len(grids), 1, squeeze=False, height_ratios=heights)[:, 0], grids):
        image = montage([images for _, images in rows])
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        h = rows[0][1].shape[2] + 1
        ax.set_yticks([i * h + (h - 1) / 2 for i in range(len(rows))], [label for label, _ in rows], fontsize=8)
        ax.set_xticks([])
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return write_figure(path, fig, "drfrank stitching", provenance, dpi)


def grid_of(front_layer: str, images: Dict[str, Any], mse_images: Optional[Dict[str, Any]] = None,
            objective: str = "task") -> Tuple[str, List[Tuple[str, np.ndarray]]]:
    """The panel of one front layer: real images, the trained stitch's (and the mse twin's), the least-squares fit's."""
    rows = [("real", images["real"]), (f"{objective} stitch", images["trans"])]
    if mse_images is not None:
        rows.append(("mse stitch", mse_images["trans"]))
    rows.append(("least squares", images["ps_inv"]))
    return f"{front_layer} -> {INPUT_LAYER}", rows
