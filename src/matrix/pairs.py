"""Stitch matrices of every ordered pair of networks (``stitch_matrix.py --fronts A B ... --ends C D ...``).

Each pair (front network, end network) is an ordinary matrix run (:func:`src.matrix.run.run_matrix`) in a
run folder of its own, ``<out>/<run-name>/<front label>--<end label>``; a network is not paired with itself.
When every pair is done, ``pairs.csv`` (and ``pairs.pkl``) in ``<out>/<run-name>`` hold one row per pair:
the triangle statistic of the stitched accuracy (on or below the proportional diagonal against above it),
Spearman's correlation of stitching with CKA, and both networks' test accuracy; ``pairs.png`` shows every
pair's matrix in one grid (rows: front networks, columns: end networks), as Hernandez et al. (2022) do.
``--resume`` finishes each pair's run; with ``--shard`` every shard runs its slice of every pair and the
pairs' tables are written by ``--collect`` of each pair folder.
"""
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from src.config import get_config
from src.data import DataSource
from src.errors import UserError
from src.matrix.plan import MatrixJob, plan_matrix
from src.matrix.plot import draw_matrix
from src.matrix.run import run_matrix
from src.models.describe import checkpoint_label, file_safe
from src.models.networks import network_path
from src.provenance import provenance
from src.results_io import write_csv, write_figure, write_pickle
from src.stitching.run import run_dir

PAIRS_FORMAT = "drfrank-stitch-matrix-pairs"


def pair_label(ref: str) -> str:
    """A network's part of a pair folder's name: a checkpoint's ``<folder>-<stem>``, a spec made file-safe."""
    return file_safe(checkpoint_label(ref) if Path(ref).is_file() else ref)


def ordered_pairs(fronts: Sequence[str], ends: Sequence[str]) -> List[Tuple[str, str]]:
    """Every (front, end) with front from ``fronts`` and end from ``ends``, a network never with itself."""
    pairs = [(f, e) for f in fronts for e in ends if network_path(f) != network_path(e)]
    if not pairs:
        raise UserError("--fronts and --ends give no pair of two different networks; name at least two networks")
    labels = [f"{pair_label(f)}--{pair_label(e)}" for f, e in pairs]
    if len(set(labels)) != len(labels):
        raise UserError("two pairs would share a run folder (networks with the same folder and file name); give "
                        "checkpoints whose <folder>/<file> names differ")
    return pairs


def run_pairs(mjob: MatrixJob, fronts: Sequence[str], ends: Sequence[str], argv=None, progress: Optional[bool] = None,
              data: Optional[DataSource] = None) -> Tuple[Optional[Path], Optional[pd.DataFrame]]:
    """Run the matrix of every ordered pair (each checked before any runs); returns ``pairs.pkl``'s path and the
    table (None for a shard). ``mjob``: the options of every pair, its networks and run name replaced per pair."""
    pairs = ordered_pairs(fronts, ends)
    folder = run_dir(mjob.job, get_config()) if mjob.job.run_name else None
    if folder is None:
        raise UserError("--fronts / --ends need --run-name: the folder that holds one run folder per pair")
    jobs = []
    for front, end in pairs:
        job = replace(mjob.job, front_model=front, end_model=end, out_dir=str(folder),
                      run_name=f"{pair_label(front)}--{pair_label(end)}")
        jobs.append(replace(mjob, job=job, pairs=None))
    for pair_job in jobs:  # every pair's options, layers and shapes, before any pair runs
        plan_matrix(pair_job, data=data)
    summaries = {}
    for (front, end), pair_job in zip(pairs, jobs):
        print(f"pair {pair_job.job.run_name}")
        _, summary = run_matrix(pair_job, argv, progress, data=data)
        summaries[(front, end)] = summary
    if mjob.shard is not None or any(s is None for s in summaries.values()):
        return None, None
    return write_pairs(folder, summaries, mjob.depth_axes, argv)


def pairs_table(summaries: Dict[Tuple[str, str], Dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for (front, end), s in summaries.items():
        triangle = s["triangle"]["trained"]["stitched"]
        rows.append({"front": front, "end": end, "run": str(Path(s["params"]["run_folder"]).name),
                     "on_or_below_diagonal": triangle["mean_on_or_below"], "above_diagonal": triangle["mean_above"],
                     "triangle_difference": triangle["difference"], "spearman_stitching_cka": s["spearman"]["trained"],
                     "end_acc": s["end_acc"]["trained"], "cells": int(s["tables"]["matrix"].size)})
    return pd.DataFrame(rows)


def write_pairs(folder: Path, summaries: Dict[Tuple[str, str], Dict[str, Any]], depth_axes: bool,
                argv=None) -> Tuple[Path, pd.DataFrame]:
    """``pairs.csv``, ``pairs.png`` and (last) ``pairs.pkl`` in ``folder``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only where a figure is drawn
    from matplotlib.figure import Figure

    table = pairs_table(summaries)
    write_csv(folder / "pairs.csv", table, index=False)
    fronts = list(dict.fromkeys(f for f, _ in summaries))
    ends = list(dict.fromkeys(e for _, e in summaries))
    fig = Figure(figsize=(4.2 * len(ends), 3.8 * len(fronts)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(fronts), len(ends), squeeze=False)
    for i, front in enumerate(fronts):
        for j, end in enumerate(ends):
            summary = summaries.get((front, end))
            if summary is None:
                axes[i][j].set_axis_off()
                continue
            draw_matrix(axes[i][j], summary["tables"]["matrix"], f"{pair_label(front)} -> {pair_label(end)}",
                        depth_axes, colorbar_label="test accuracy")
    fig.suptitle("stitched test accuracy of every pair (rows: front networks, columns: end networks)", fontsize=10)
    record = provenance(None, argv)
    write_figure(folder / "pairs.png", fig, "drfrank stitch_matrix", record)
    content = {"format": PAIRS_FORMAT, "version": 1, "pairs": table, "provenance": record,
               "runs": {f"{pair_label(f)}--{pair_label(e)}": str(Path(s["params"]["run_folder"]))
                        for (f, e), s in summaries.items()}}
    return write_pickle(folder / "pairs.pkl", content), table
