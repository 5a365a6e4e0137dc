"""Planning a stitch matrix: the job, its cells and the checks made before anything runs.

A matrix is a list of cells, and a cell is a complete single-stitch job: a
:class:`~src.stitching.job.StitchJob` with its layers set and ``cache_front`` on, and the path of its
pickle (``<run>/cells/<front_layer>--<end_layer>.pkl``; controls under
``<run>/controls/<variant>/``). :func:`plan_matrix` builds and checks them all before anything runs
(:mod:`src.matrix.run` runs them, :mod:`src.matrix.summary` turns their results into tables).

Variants: ``trained`` (front into end) and, with ``controls``, ``random_front`` (the
front network's iteration-0 checkpoint ``0.pt`` when one lies beside it, else a freshly initialised network
of the same architecture with a recorded seed, saved under ``<run>/controls/``) into the trained
end, and the trained front into ``random_end``.
"""
from dataclasses import dataclass, fields, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from src.config import get_config
from src.data import DataSource
from src.errors import UserError
from src.features import select_layers
from src.models.blocks import block_outputs
from src.models.describe import display_name
from src.models.networks import load_network, module_ref, network_kind, random_copy
from src.stitching.cut import INPUT_LAYER
from src.stitching.job import StitchJob
from src.stitching.run import Pair, build_cell, load_pair, run_dir
from src.validation import check_batch_fits, check_writable_dir
from src.matrix.runinfo import MATRIX_FIELDS
from src.stitching.images import check_input_stitch

BLOCKS = "blocks"
VARIANTS = ("trained", "random_front", "random_end")


@dataclass
class MatrixJob:
    """What ``stitch_matrix.py`` parses: the stitch options (``job``: front_model = front, end_model =
    end; its layers are set per cell) and the layer patterns of each side."""

    job: StitchJob
    front_layers: Sequence[str]
    end_layers: Sequence[str]
    controls: bool = False
    depth_axes: bool = False
    control_seed: int = 0
    resume: bool = False  # rejoin an existing run folder with the same parameters: finished cells are skipped
    shard: Optional[Tuple[int, int]] = None  # (K, N): run only the K-th (from 1) of N slices of the cells, no tables
    pairs: Optional[Tuple[Sequence[str], Sequence[str]]] = None  # (fronts, ends): every ordered pair (src.matrix.pairs)


@dataclass
class Cell:
    """One stitch of the matrix: a complete single-stitch job and where its result goes."""

    variant: str
    job: StitchJob
    path: Path


@dataclass
class Plan:
    run_folder: Path
    front_layers: List[str]
    end_layers: List[str]
    checkpoints: Dict[str, Tuple[str, str]]  # variant -> (front network, end network): references (src.models.networks)
    controls: Dict[str, Dict[str, Any]]  # random_front / random_end -> where the random network comes from
    cells: List[Cell]
    base: StitchJob
    labels: Tuple[List[str], List[str]] = field(default_factory=lambda: ([], []))
    names: Tuple[str, str] = ("front", "end")  # e.g. 'Tiny10 in0-gn0-8580'
    weights: Dict[str, Tuple[Optional[str], Optional[str]]] = field(default_factory=dict)  # variant -> weights files


def table_name(table: str, variant: str) -> str:
    """``matrix`` / ``relative`` / ``ps_inv`` / ``cka`` of the trained pair; ``<table>_control_<variant>`` of a control."""
    return table if variant == "trained" else f"{table}_control_{variant}"


def cell_path(run_folder: Path, variant: str, front_layer: str, end_layer: str) -> Path:
    folder = run_folder / "cells" if variant == "trained" else run_folder / "controls" / variant
    return folder / f"{front_layer}--{end_layer}.pkl"


def select_matrix_layers(model: torch.nn.Module, patterns: Sequence[str], example: torch.Tensor) -> List[str]:
    """Layer names for patterns as in ``compare_layers.py`` (names, globs, ``re:``) or the preset ``blocks``."""
    patterns = [p for p in patterns]
    if not patterns:
        raise UserError("no layer pattern given; name layers, globs, re:REGEX or 'blocks'")
    if INPUT_LAYER in patterns:  # the network input (an end only): first, at depth 0
        rest = [p for p in patterns if p != INPUT_LAYER]
        return [INPUT_LAYER] + (select_matrix_layers(model, rest, example) if rest else [])
    if BLOCKS in patterns:
        if len(patterns) > 1:
            raise UserError(f"'{BLOCKS}' is a preset of its own; do not combine it with other patterns")
        return block_outputs(model, example)
    return select_layers(model, patterns, example)


def check_compatible(pair: Pair) -> None:
    """Front and end must read the same inputs and predict the same classes."""
    front, end = pair.front_meta, pair.end_meta
    for key, what in (("n_classes", "class counts"), ("input_size", "input sizes"), ("n_channels", "input channels")):
        if front.get(key) is not None and end.get(key) is not None and list(np.atleast_1d(front[key])) != list(np.atleast_1d(end[key])):
            raise UserError(f"the front and end have different {what} ({front[key]} vs {end[key]}); "
                            f"stitch networks trained on the same task")


def refuse_existing_run(run_folder: Path, overwrite: bool) -> None:
    if run_folder.exists() and not overwrite:
        raise UserError(f"{run_folder} already exists; pass --overwrite to replace it, --resume to finish it or "
                        f"choose another --run-name")


def joins_run(mjob: MatrixJob) -> bool:
    """--resume and every --shard rejoin a run folder (same parameters, finished cells kept) instead of refusing it."""
    return mjob.resume or mjob.shard is not None


def random_checkpoint(checkpoint: str, role: str, run_folder: Path, seed: int) -> Dict[str, Any]:
    """Where the random-weight control of a network comes from: a checkpoint's iteration-0 ``0.pt`` beside it, or a
    freshly initialised network of the same architecture: a checkpoint written under ``<run>/controls/`` (the weights
    file of a model spec, the checkpoint of a zoo model), or, for a module from Python, a re-initialised copy."""
    kind = network_kind(checkpoint)
    fresh = f"freshly initialised network of the same architecture (seed {seed})"
    if kind == "module":
        return {"checkpoint": module_ref(random_copy(load_network(checkpoint)[0], seed)), "weights": None,
                "seed": seed, "source": f"re-initialised copy of the module (seed {seed})"}
    if kind == "spec":
        return {"checkpoint": checkpoint, "weights": str(run_folder / "controls" / f"random_{role}.pt"), "seed": seed,
                "source": fresh}
    zero = Path(checkpoint).parent / "0.pt"
    if zero.is_file() and zero.resolve() != Path(checkpoint).resolve():
        return {"checkpoint": str(zero), "weights": None, "source": "iteration-0 checkpoint of the same run",
                "seed": None}
    return {"checkpoint": str(run_folder / "controls" / f"random_{role}.pt"), "weights": None, "seed": seed,
            "source": fresh}


def plan_matrix(mjob: MatrixJob, config=None, data: Optional[DataSource] = None) -> Tuple[Plan, Pair]:
    """Every cell of the matrix, checked before anything is written or trained: options, layers, shapes.
    ``data``: the user's own data (:class:`~src.data.source.UserData`), else the job's data set."""
    base = mjob.job
    base.check(matrix=True)
    config = config or get_config()
    run_folder = run_dir(base, config)
    if joins_run(mjob) and base.overwrite:
        raise UserError("--overwrite empties the run folder, --resume / --shard keep its finished cells; pass one of them")
    if not joins_run(mjob):
        refuse_existing_run(run_folder, base.overwrite)
    check_writable_dir(run_folder)
    pair = load_pair(base, config, data)
    check_compatible(pair)
    check_input_stitch(pair.dataset, mjob.front_layers, mjob.end_layers)
    example = torch.zeros(2, *pair.input_shape, device=pair.device)
    front_layers = select_matrix_layers(pair.front_model, mjob.front_layers, example)
    end_layers = select_matrix_layers(pair.end_model, mjob.end_layers, example)
    base = replace(base, dataset=pair.dataset, run_name=run_folder.name, cache_front=True, no_augment=True,
                   val_size=getattr(pair.data, "val_size", base.val_size) if base.val_size is None else base.val_size)
    check_batch_fits(base.batch_size, pair.plain_train(base).num_samples)
    for s in front_layers:  # the stitch of every cell must exist (shapes, init, mask) before anything runs
        for r in end_layers:
            build_cell(pair, replace(base, front_layer=s, end_layer=r))
    checkpoints = {"trained": (base.front_model, base.end_model)}
    controls: Dict[str, Dict[str, Any]] = {}
    weights = {"trained": (base.front_weights, base.end_weights)}
    if mjob.controls:
        controls["random_front"] = random_checkpoint(base.front_model, "front", run_folder, mjob.control_seed)
        controls["random_end"] = random_checkpoint(base.end_model, "end", run_folder, mjob.control_seed + 1)
        checkpoints["random_front"] = (controls["random_front"]["checkpoint"], base.end_model)
        checkpoints["random_end"] = (base.front_model, controls["random_end"]["checkpoint"])
        weights["random_front"] = (controls["random_front"]["weights"], base.end_weights)
        weights["random_end"] = (base.front_weights, controls["random_end"]["weights"])
    objective = "task" if base.objective == "both" else base.objective  # both: the mse twins run beside (evess)
    cells = [Cell(variant, variant_job(base, checkpoints[variant], weights[variant], front_layer=s, end_layer=r,
                                       objective=objective), cell_path(run_folder, variant, s, r))
             for variant in checkpoints for s in front_layers for r in end_layers]
    # With the blocks preset a layer's label starts with its number: the blocks before it (Hernandez et al.).
    labels = tuple([f"{i} {name}" if BLOCKS in patterns else name for i, name in enumerate(names)]
                   for names, patterns in ((front_layers, mjob.front_layers), (end_layers, mjob.end_layers)))
    names = (display_name(pair.front_meta, base.front_model), display_name(pair.end_meta, base.end_model))
    return Plan(run_folder, front_layers, end_layers, checkpoints, controls, cells, base, labels, names, weights), pair


def variant_job(base: StitchJob, networks: Tuple[str, str], weights: Tuple[Optional[str], Optional[str]],
                **changes) -> StitchJob:
    """``base`` with the networks of one variant (and their weights files) and ``changes``."""
    return replace(base, front_model=networks[0], end_model=networks[1], front_weights=weights[0],
                   end_weights=weights[1], **changes)


@dataclass
class Done:
    """What :func:`run_cells` leaves for the tables: results and wall times of the cells this process ran."""

    results: Dict[str, Dict[Tuple[str, str], Dict]]
    seconds: Dict[str, Dict[Tuple[str, str], float]]
    cache_seconds: Dict[str, Dict[str, float]]
    twins: Any


def matrix_job_from_info(info: Dict[str, Any], folder: Path):
    """The :class:`MatrixJob` that wrote ``folder`` (for ``--collect``)."""
    p = info["parameters"]
    names = {f.name for f in fields(StitchJob)}
    job = StitchJob(front_model=p["front"], end_model=p["end"], front_weights=p.get("front_weights"),
                    end_weights=p.get("end_weights"),
                    out_dir=str(Path(folder).resolve().parent), run_name=Path(folder).resolve().name,
                    **{k: v for k, v in p["job"].items() if k in names})
    return MatrixJob(job=job, resume=True, **{name: p[name] for name in MATRIX_FIELDS})
