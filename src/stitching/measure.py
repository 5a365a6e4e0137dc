"""One pass over a split that yields everything a stitching result reports.

For every batch: the logits of the front network, the end network, the trained stitch and the
least-squares stitch; and (for the first ``measure_samples`` samples) the activations compared by
CKA and MSE - the front layer, the trained stitch output and the least-squares stitch output, each
against the end network's own activation at the end layer.
"""
from dataclasses import dataclass, field
from typing import Dict, Iterable

import torch
from tqdm import tqdm

from src.similarity import LeastSquaresFit
from src.stitching.frank import FrankensteinNet
from src.stitching.layers import AffineStitch

LOGIT_KEYS = ("front", "end", "trans", "ps_inv")
ACTIVATION_KEYS = ("front", "end", "trans", "ps_inv")


@dataclass
class Outputs:
    logits: Dict[str, torch.Tensor]
    targets: torch.Tensor
    activations: Dict[str, torch.Tensor] = field(default_factory=dict)  # flattened, CPU float32


def collect_statistics(frank: FrankensteinNet, loader: Iterable, progress=None) -> LeastSquaresFit:
    """Least-squares co-moments of (front activation -> end activation) over ``loader``.

    The rows are the stitch kind's design (:meth:`AffineStitch.design`): pixels for a 1x1 stitch,
    k x k patches for a strided one, resampled sender pixels for the resample kinds, whole samples
    for flatten and linear. One global fit streamed over batches, never an average of per-batch fits.
    """
    fit = LeastSquaresFit()
    for x, _ in tqdm(loader, desc="least squares / correlations", leave=False,
                     disable=None if progress is None else not progress):
        fit.update(*frank.stitch.design(frank.front_activation(x), frank.end_target(x)))
    return fit


@torch.no_grad()
def collect_outputs(frank: FrankensteinNet, ps_inv_stitch: AffineStitch, loader: Iterable, measure_samples: int,
                    progress=None) -> Outputs:
    frank.eval()
    logits = {k: [] for k in LOGIT_KEYS}
    acts = {k: [] for k in ACTIVATION_KEYS}
    targets, kept = [], 0
    for x, y in tqdm(loader, desc="evaluating on the test split", leave=False,
                     disable=None if progress is None else not progress):
        front = frank.front(x)
        trans, ps_inv = frank.stitch(front), ps_inv_stitch(front)
        logits["front"].append(frank.front_model(x).float().cpu())
        logits["end"].append(frank.end_model(x).float().cpu())
        logits["trans"].append(frank.end(x, trans).float().cpu())
        logits["ps_inv"].append(frank.end(x, ps_inv).float().cpu())
        targets.append(y.cpu())
        take = min(x.shape[0], measure_samples - kept)
        if take > 0:
            end = frank.end_front(x)
            for key, value in (("front", front), ("end", end), ("trans", trans), ("ps_inv", ps_inv)):
                acts[key].append(value[:take].flatten(1).float().cpu())
            kept += take
    return Outputs({k: torch.cat(v) for k, v in logits.items()}, torch.cat(targets),
                   {k: torch.cat(v) for k, v in acts.items()} if kept else {})


