"""One pass over a split that yields everything a stitching result reports.

For every batch: the logits of the front network, the end network, the trained stitch and the
least-squares stitch; and (for the first ``measure_samples`` samples) the activations compared by
CKA and MSE - the front layer, the trained stitch output and the least-squares stitch output, each
against the end network's own activation at the end layer.
"""
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional

import torch
from tqdm import tqdm

from src.features.stream import FirstSamples
from src.stitching.batches import FrontCache
from src.stitching.frank import FrankensteinNet
from src.stitching.affine import AffineStitch

LOGIT_KEYS = ("front", "end", "trans", "ps_inv")
ACTIVATION_KEYS = ("front", "end", "trans", "ps_inv")


@dataclass
class Outputs:
    logits: Dict[str, torch.Tensor]
    targets: torch.Tensor
    activations: Dict[str, torch.Tensor] = field(default_factory=dict)  # flattened, CPU float32


@torch.no_grad()
def collect_outputs(frank: FrankensteinNet, ps_inv_stitch: AffineStitch, loader: Iterable, measure_samples: int,
                    progress=None, network_logits: Optional[Dict[str, torch.Tensor]] = None,
                    fronts: Optional[FrontCache] = None, measured: Optional[torch.Tensor] = None) -> Outputs:
    """``network_logits``: the front and end networks' own logits on ``loader`` when already known (a stitch
    matrix computes them once for all its cells; see :func:`network_logits`). ``fronts``: the front layer's
    activations on ``loader`` (a :class:`FrontCache` of it) and ``measured``: the end network's activations of
    the measured samples (:func:`measured_targets`), when a stitch matrix has them already."""
    frank.eval()
    logits = {k: [] for k in LOGIT_KEYS}
    acts = {k: [] for k in ACTIVATION_KEYS}
    targets, first = [], FirstSamples(measure_samples)
    batches = fronts.items() if fronts is not None else ((x, y, None) for x, y in loader)
    for x, y, front in tqdm(batches, desc="evaluating on the test split", leave=False, total=len(loader),
                            disable=None if progress is None else not progress):
        front = frank.front(x) if front is None else front
        trans, ps_inv = frank.stitch(front), ps_inv_stitch(front)
        if network_logits is None:
            logits["front"].append(frank.front_model(x).float().cpu())
            logits["end"].append(frank.end_model(x).float().cpu())
        logits["trans"].append(frank.end(x, trans).float().cpu())
        logits["ps_inv"].append(frank.end(x, ps_inv).float().cpu())
        targets.append(y.cpu())
        start, take = first.kept, first.take(x.shape[0])
        if take > 0:
            end = measured[start:start + take] if measured is not None else _flat(frank.end_front(x)[:take])
            acts["end"].append(end)
            for key, value in (("front", front), ("trans", trans), ("ps_inv", ps_inv)):
                acts[key].append(_flat(value[:take]))
    logits = {k: (network_logits[k] if network_logits is not None and k in network_logits else torch.cat(v))
              for k, v in logits.items()}
    return Outputs(logits, torch.cat(targets), {k: torch.cat(acts[k]) for k in ACTIVATION_KEYS} if first.kept else {})


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).float().cpu()


@torch.no_grad()
def measured_targets(end_front, loader: Iterable, measure_samples: int) -> torch.Tensor:
    """The end network's own activations (``end_front``: its front part up to the end layer) of the first
    ``measure_samples`` samples of ``loader``, as :func:`collect_outputs` measures them."""
    acts, first = [], FirstSamples(measure_samples)
    for x, _ in loader:
        if first.done:
            break
        acts.append(_flat(end_front(x)[:first.take(x.shape[0])]))
    return torch.cat(acts) if acts else torch.empty(0)


@torch.no_grad()
def network_logits(front_model, end_model, loader: Iterable) -> Dict[str, torch.Tensor]:
    """The two networks' own logits on ``loader`` (as :func:`collect_outputs` computes them)."""
    out = {"front": [], "end": []}
    for x, _ in loader:
        out["front"].append(front_model(x).float().cpu())
        out["end"].append(end_model(x).float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


