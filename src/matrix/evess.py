"""EV / ES / SV: how far a task-trained stitch's output is from what the end expects (Hernandez et al. 2022).

With ``stitch_matrix.py --objective both`` every cell trains two stitches from the same
initialisation (the same job and seed): the *vanilla* stitch on the task loss (``cells/<s>--<r>.pkl``)
and the *similarity* stitch on the MSE to the end network's activation (``cells/<s>--<r>.mse.pkl``, the
same result schema). On the test split (the first ``--max-samples`` images when given) they give,
as mean squared errors over every element of every sample:

- EV: expected representation (the end network's own activation at the end layer) vs the vanilla stitch's output;
- ES: expected vs the similarity stitch's output;
- SV: the similarity stitch's output vs the vanilla one's;
- EL (beside them): expected vs the least-squares stitch ``ps_inv`` of the same cell, the exact minimiser
  of the similarity stitch's loss on the training split - the ES that training can reach (when ES is far
  above EL, the similarity stitch has not converged).

Raw MSE spans orders of magnitude across layers, so each is also divided by the variance of the
expected representation: the mean over its features (every channel x pixel) of the variance over
test samples (population variance, ddof 0). ``EV_rel = 1`` is as far as always answering the
per-feature mean. ``evess.csv`` has one row per cell; ``evess_summary.csv`` the min / mean / max /
std of each column over all cells, the cells on the proportional diagonal (end depth = front
depth: the same layer in a self-matrix, as the paper's Tables 1 and 2), the cells below it (the
"triangle" off the diagonal: end earlier than front) and above it, and the cells into the end network's
``input`` (image generation; placed by depth among the other end layers only, so a self-matrix with
``input`` keeps its same-layer diagonal). EV >> ES on the triangle
cells means the vanilla stitch reaches its accuracy with something other than what the end
computes there.
"""
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch

from src.matrix.resume import finished_result
from src.stitching.cut import INPUT_LAYER
from src.stitching.run import EVAL_BATCH, build_cell, least_squares_stitch, run_stitch, write_result

MSE_SUFFIX = ".mse.pkl"
COLUMNS = ("EV", "ES", "SV", "EL")
GROUPS = ("all", "diagonal", "below diagonal", "above diagonal", "input")
STATISTICS = ("min", "mean", "max", "std")


def mse_cell_path(path):
    """``cells/<s>--<r>.pkl`` -> ``cells/<s>--<r>.mse.pkl`` (the similarity stitch of the same cell)."""
    return path.with_name(path.name[:-len(".pkl")] + MSE_SUFFIX)


@torch.no_grad()
def measure_evess(frank, similarity_stitch, least_squares, loader, fronts=None) -> Dict[str, float]:
    """EV, ES, SV, EL and the expected representation's variance on ``loader`` (``frank.stitch``: the vanilla
    stitch, ``least_squares``: the least-squares stitch; ``fronts``: a FrontCache of the front layer on ``loader``).

    Sums in float64; the variance from sums shifted by the first batch's mean (no cancellation).
    """
    frank.eval()
    sums = {name: 0.0 for name in COLUMNS}
    shift = s1 = s2 = None
    n = 0
    batches = fronts.batches() if fronts is not None else ((x, None) for x, _ in loader)
    for x, front in batches:
        front = frank.front(x) if front is None else front
        expected = frank.end_target(x).double().flatten(1)
        vanilla = frank.stitch(front).double().flatten(1)
        similar = similarity_stitch(front).double().flatten(1)
        fitted = least_squares(front).double().flatten(1)
        sums["EV"] += float((expected - vanilla).pow(2).sum())
        sums["ES"] += float((expected - similar).pow(2).sum())
        sums["SV"] += float((similar - vanilla).pow(2).sum())
        sums["EL"] += float((expected - fitted).pow(2).sum())
        if shift is None:
            shift = expected.mean(0)
            s1, s2 = torch.zeros_like(shift), torch.zeros_like(shift)
        centred = expected - shift
        s1 += centred.sum(0)
        s2 += centred.pow(2).sum(0)
        n += expected.shape[0]
    features = s1.numel()
    variance = float((s2 / n - (s1 / n).pow(2)).mean())
    out = {name: value / (n * features) for name, value in sums.items()}
    out.update({f"{name}_rel": out[name] / variance if variance > 0 else float("nan") for name in COLUMNS})
    out.update(variance=variance, samples=n, features=features)
    return out


def diagonal_position(i: int, j: int, n_senders: int, n_receivers: int) -> str:
    """``diagonal`` / ``below diagonal`` / ``above diagonal`` of cell (front i, end j) at proportional depth,
    compared exactly in integers (end depth j/(R-1) against front depth i/(S-1))."""
    left, right = j * max(n_senders - 1, 0), i * max(n_receivers - 1, 0)
    return "diagonal" if left == right else ("below diagonal" if left < right else "above diagonal")


def cell_position(front: str, end: str, front_layers: List[str], end_layers: List[str]) -> str:
    """The group of a cell: ``input`` for a stitch into the input, else its place against the proportional
    diagonal of the matrix without the ``input`` column."""
    if end == INPUT_LAYER:
        return INPUT_LAYER
    layers = [r for r in end_layers if r != INPUT_LAYER]
    return diagonal_position(front_layers.index(front), layers.index(end), len(front_layers), len(layers))


def evess_table(rows: List[Dict[str, Any]]) -> pd.DataFrame:
    """One row per cell: front and end layer, position, EV, ES, SV, their _rel forms, EV/ES, variance."""
    frame = pd.DataFrame(rows)
    frame["EV_over_ES"] = frame["EV"] / frame["ES"]
    first = ["front layer", "end layer", "position", *COLUMNS, *(f"{c}_rel" for c in COLUMNS), "EV_over_ES"]
    return frame[first + [c for c in frame.columns if c not in first]]


def evess_summary(table: pd.DataFrame) -> pd.DataFrame:
    """min / mean / max / std (ddof 1; NaN for one cell) of EV, ES, SV and their _rel forms per group of cells."""
    values = [*COLUMNS, *(f"{c}_rel" for c in COLUMNS), "EV_over_ES"]
    blocks = []
    for group in GROUPS:
        part = table if group == "all" else table[table["position"] == group]
        if part.empty:
            continue
        stats = part[values].agg(list(STATISTICS))
        stats.index = pd.MultiIndex.from_product([[group], stats.index], names=["cells", "statistic"])
        stats.insert(0, "n_cells", len(part))
        blocks.append(stats)
    return pd.concat(blocks)


class SimilarityTwins:
    """The similarity (mse) stitch of every trained cell of a ``--objective both`` matrix, and EV / ES / SV.

    ``run`` is called right after the vanilla stitch of a cell, with its trained network: the twin is
    the same job with ``objective='mse'``, built and trained by the same steps of
    :mod:`src.stitching.run` (same seed, so the same initial stitch) on the same cached activations.
    """

    def __init__(self, enabled: bool, front_layers: List[str], end_layers: List[str]):
        self.enabled, self.front_layers, self.end_layers = enabled, list(front_layers), list(end_layers)
        self.results: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.rows: List[Dict[str, Any]] = []

    def run(self, pair, cell, frank, folder, argv, shared, timing) -> Optional[Dict[str, Any]]:
        """``shared``: the cell's :class:`~src.matrix.caches.CellCaches` (the twin reads the same activations)."""

        if not self.enabled or cell.variant != "trained":
            return None
        job = self.twin_job(cell)
        twin = build_cell(pair, job)
        result = run_stitch(pair, job, folder, argv, cache=shared.train, frank=twin, timing=timing, shared=shared)
        fitted = least_squares_stitch(twin.stitch, result["trans_m"]["ps_inv"])
        result["evess"] = measure_evess(frank, twin.stitch, fitted, pair.fixed_loader(job, "test", EVAL_BATCH),
                                        shared.test)
        write_result(mse_cell_path(cell.path), result)  # with its EV / ES / SV row: the tables can be rebuilt from it
        self.adopt(cell, result)
        return result

    @staticmethod
    def twin_job(cell):
        return replace(cell.job, objective="mse")

    def finished(self, cell, digests) -> Optional[Dict[str, Any]]:
        """The cell's finished similarity stitch (with its EV / ES / SV row), or None; always None when disabled."""

        if not self.enabled or cell.variant != "trained":
            return None
        result = finished_result(mse_cell_path(cell.path), self.twin_job(cell), digests)
        return result if result is not None and "evess" in result else None

    def needed(self, cell) -> bool:
        return self.enabled and cell.variant == "trained"

    def adopt(self, cell, result: Dict[str, Any]) -> None:
        """Count a cell's similarity stitch (run here, or read back from its pickle) in the tables."""
        s, r = cell.job.front_layer, cell.job.end_layer
        self.results[(s, r)] = result
        position = cell_position(s, r, self.front_layers, self.end_layers)
        self.rows = [row for row in self.rows if (row["front layer"], row["end layer"]) != (s, r)]
        self.rows.append({"front layer": s, "end layer": r, "position": position, **result["evess"]})

    def tables(self) -> Dict[str, Any]:
        """``matrix_mse`` (the similarity stitches' test accuracy, front_layers x end_layers), ``evess``, ``evess_summary``."""
        if not self.enabled:
            return {}
        acc = [[self.results[(s, r)]["model_results"]["trans"]["acc"] if (s, r) in self.results else np.nan
                for r in self.end_layers] for s in self.front_layers]
        matrix = pd.DataFrame(acc, index=pd.Index(self.front_layers, name="front layer"), columns=self.end_layers)
        order = {(s, r): i for i, (s, r) in enumerate((s, r) for s in self.front_layers for r in self.end_layers)}
        rows = sorted(self.rows, key=lambda row: order[(row["front layer"], row["end layer"])])  # plan order,
        table = evess_table(rows)  # whichever process ran which cell
        return {"matrix_mse": matrix, "evess": table, "evess_summary": evess_summary(table)}


def print_evess(summary: Dict[str, Any]) -> None:
    """The EV / ES / SV summary table and the verdict on the cells below the diagonal, as plain text."""
    if "evess_summary" not in summary:
        return
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 200):
        print("EV / ES / SV (test split; _rel: divided by the variance of the expected representation):")
        print(summary["evess_summary"].to_string())
    table = summary["evess"]
    below = table[table["position"] == "below diagonal"]
    if len(below):
        print(f"below the diagonal ({len(below)} cells): EV_rel median {below['EV_rel'].median():.4g} vs ES_rel median "
              f"{below['ES_rel'].median():.4g}; EV/ES median {below['EV_over_ES'].median():.4g} "
              f"(EV > ES in {int((below['EV'] > below['ES']).sum())} of {len(below)} cells)")
