"""Stitch matrices (``stitch_matrix.py``): every sender layer stitched into every receiver layer, beside CKA.

A matrix is a list of cells, and a cell is a complete single-stitch job: a
:class:`~src.stitching.job.StitchJob` with its layers set and ``cache_front`` on, and the path of its
pickle (``<run>/cells/<sender_layer>--<receiver_layer>.pkl``; controls under
``<run>/controls/<variant>/``). :func:`plan_matrix` builds and checks them all before anything runs;
:func:`run_matrix` runs them with the steps of :mod:`src.stitching.run` - the networks are loaded
once per variant and each sender layer's activations on the unaugmented training split are computed
once (:class:`~src.stitching.batches.FrontCache`) and reused for the least-squares statistics and
the training of every receiver layer; the other passes that depend on one layer only (the sender's
validation and test activations, the receiver's least-squares targets and measured activations) are
cached per layer too (:mod:`src.stitching.caches`) - so a cell is exactly what
``stitch_nets.py --cache-front`` computes for that pair (same schema, same numbers with the same seed).

Variants: ``trained`` (sender into receiver) and, with ``controls``, ``random_sender`` (the
sender's iteration-0 checkpoint ``0.pt`` when one lies beside it, else a freshly initialised network
of the same architecture with a recorded seed, saved under ``<run>/controls/``) into the trained
receiver, and the trained sender into ``random_receiver``.
"""
import shutil
import time
from datetime import timedelta
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from src.compare.common import display_name
from src.config import get_config, resolve_device
from src.errors import UserError
from src.features import select_layers
from src.features.blocks import block_outputs
from src.models import create_model
from src.models.checkpoint import save_checkpoint
from src.provenance import jsonable, provenance
from src.results_io import claim_output, try_claim, write_csv, write_pickle
from src.similarity import layer_similarity
from src.stitching.cut import INPUT_LAYER
from src.stitching.caches import MatrixCaches
from src.stitching.evess import SimilarityTwins, mse_cell_path, print_evess
from src.stitching.images import check_input_stitch, matrix_grids, save_image_grid
from src.stitching.job import StitchJob
from src.stitching.matrix_plot import save_matrix_png
from src.stitching.matrix_stats import proportional_depths, spearman, triangle_statistic
from src.stitching.objectives import check_objective
from src.stitching.run import EVAL_BATCH, Pair, build_cell, load_pair, run_dir, run_stitch, write_result
from src.sweep.finished import finished_result, remove_leftovers
from src.sweep.runinfo import (RUN_INFO, check_same_run, matrix_job_from_info, publish_once, publish_or_check,
                               read_run_info, run_parameters)
from src.sweep.shard import cells_for
from src.validation import check_batch_fits, check_stitch_job, check_writable_dir

FORMAT = "drfrank-stitch-matrix"
VERSION = 1
BLOCKS = "blocks"
VARIANTS = ("trained", "random_sender", "random_receiver")
#: Files of a run folder that a matrix run writes (replaced as a whole with --overwrite).
TABLES = ("matrix", "relative", "ps_inv", "cka")
#: The key of ``timing["cache_seconds"][variant]`` for the one-pass caches of all layers (src.stitching.caches).
PREFILL = "all layers, one pass per split"
#: How long a torchrun rank may wait at a barrier for the others (their remaining cells).
SWEEP_TIMEOUT = timedelta(days=7)


@dataclass
class MatrixJob:
    """What ``stitch_matrix.py`` parses: the stitch options (``job``: front_model = sender, end_model =
    receiver; its layers are set per cell) and the layer patterns of each side."""

    job: StitchJob
    sender_layers: Sequence[str]
    receiver_layers: Sequence[str]
    controls: bool = False
    depth_axes: bool = False
    control_seed: int = 0
    resume: bool = False  # rejoin an existing run folder with the same parameters: finished cells are skipped
    shard: Optional[Tuple[int, int]] = None  # (K, N): run only the K-th (from 1) of N slices of the cells, no tables


@dataclass
class Cell:
    """One stitch of the matrix: a complete single-stitch job and where its result goes."""

    variant: str
    job: StitchJob
    path: Path


@dataclass
class Plan:
    run_folder: Path
    senders: List[str]
    receivers: List[str]
    checkpoints: Dict[str, Tuple[str, str]]  # variant -> (sender checkpoint, receiver checkpoint)
    controls: Dict[str, Dict[str, Any]]  # random_sender / random_receiver -> where the random network comes from
    cells: List[Cell]
    base: StitchJob
    labels: Tuple[List[str], List[str]] = field(default_factory=lambda: ([], []))
    names: Tuple[str, str] = ("sender", "receiver")  # e.g. 'Tiny10 in0-gn0-8580'


def table_name(table: str, variant: str) -> str:
    """``matrix`` / ``relative`` / ``ps_inv`` / ``cka`` of the trained pair; ``<table>_control_<variant>`` of a control."""
    return table if variant == "trained" else f"{table}_control_{variant}"


def cell_path(run_folder: Path, variant: str, sender_layer: str, receiver_layer: str) -> Path:
    folder = run_folder / "cells" if variant == "trained" else run_folder / "controls" / variant
    return folder / f"{sender_layer}--{receiver_layer}.pkl"


def select_matrix_layers(model: torch.nn.Module, patterns: Sequence[str], example: torch.Tensor) -> List[str]:
    """Layer names for patterns as in ``compare_layers.py`` (names, globs, ``re:``) or the preset ``blocks``."""
    patterns = [p for p in patterns]
    if not patterns:
        raise UserError("no layer pattern given; name layers, globs, re:REGEX or 'blocks'")
    if INPUT_LAYER in patterns:  # the network input (a receiver only): first, at depth 0
        rest = [p for p in patterns if p != INPUT_LAYER]
        return [INPUT_LAYER] + (select_matrix_layers(model, rest, example) if rest else [])
    if BLOCKS in patterns:
        if len(patterns) > 1:
            raise UserError(f"'{BLOCKS}' is a preset of its own; do not combine it with other patterns")
        return block_outputs(model, example)
    return select_layers(model, patterns, example)


def check_compatible(pair: Pair) -> None:
    """Sender and receiver must read the same inputs and predict the same classes."""
    front, end = pair.front_meta, pair.end_meta
    for key, what in (("n_classes", "class counts"), ("input_size", "input sizes"), ("n_channels", "input channels")):
        if front.get(key) is not None and end.get(key) is not None and list(np.atleast_1d(front[key])) != list(np.atleast_1d(end[key])):
            raise UserError(f"the sender and receiver have different {what} ({front[key]} vs {end[key]}); "
                            f"stitch networks trained on the same task")


def refuse_existing_run(run_folder: Path, overwrite: bool) -> None:
    if run_folder.exists() and not overwrite:
        raise UserError(f"{run_folder} already exists; pass --overwrite to replace it, --resume to finish it or "
                        f"choose another --run-name")


def joins_run(mjob: MatrixJob) -> bool:
    """--resume and every --shard rejoin a run folder (same parameters, finished cells kept) instead of refusing it."""
    return mjob.resume or mjob.shard is not None


def random_checkpoint(checkpoint: str, role: str, run_folder: Path, seed: int) -> Dict[str, Any]:
    """Where the random-weight control of ``checkpoint`` comes from: its run's ``0.pt`` or a fresh network."""
    zero = Path(checkpoint).parent / "0.pt"
    if zero.is_file() and zero.resolve() != Path(checkpoint).resolve():
        return {"checkpoint": str(zero), "source": "iteration-0 checkpoint of the same run", "seed": None}
    return {"checkpoint": str(run_folder / "controls" / f"random_{role}.pt"), "seed": seed,
            "source": f"freshly initialised network of the same architecture (seed {seed})"}


def plan_matrix(mjob: MatrixJob, config=None) -> Tuple[Plan, Pair]:
    """Every cell of the matrix, checked before anything is written or trained: options, layers, shapes."""
    base = mjob.job
    check_stitch_job(base)
    check_objective(base.objective, matrix=True)
    config = config or get_config()
    run_folder = run_dir(base, config)
    if joins_run(mjob) and base.overwrite:
        raise UserError("--overwrite empties the run folder, --resume / --shard keep its finished cells; pass one of them")
    if not joins_run(mjob):
        refuse_existing_run(run_folder, base.overwrite)
    check_writable_dir(run_folder)
    pair = load_pair(base, config)
    check_compatible(pair)
    check_input_stitch(pair.dataset, mjob.sender_layers, mjob.receiver_layers)
    example = torch.zeros(2, *pair.input_shape, device=pair.device)
    senders = select_matrix_layers(pair.front_model, mjob.sender_layers, example)
    receivers = select_matrix_layers(pair.end_model, mjob.receiver_layers, example)
    base = replace(base, dataset=pair.dataset, run_name=run_folder.name, cache_front=True, no_augment=True)
    check_batch_fits(base.batch_size, pair.plain_train(base).num_samples)
    for s in senders:  # the stitch of every cell must exist (shapes, init, mask) before anything runs
        for r in receivers:
            build_cell(pair, replace(base, front_layer=s, end_layer=r))
    checkpoints = {"trained": (base.front_model, base.end_model)}
    controls: Dict[str, Dict[str, Any]] = {}
    if mjob.controls:
        controls["random_sender"] = random_checkpoint(base.front_model, "sender", run_folder, mjob.control_seed)
        controls["random_receiver"] = random_checkpoint(base.end_model, "receiver", run_folder, mjob.control_seed + 1)
        checkpoints["random_sender"] = (controls["random_sender"]["checkpoint"], base.end_model)
        checkpoints["random_receiver"] = (base.front_model, controls["random_receiver"]["checkpoint"])
    objective = "task" if base.objective == "both" else base.objective  # both: the mse twins run beside (evess)
    cells = [Cell(variant, replace(base, front_model=checkpoints[variant][0], end_model=checkpoints[variant][1],
                                   front_layer=s, end_layer=r, objective=objective), cell_path(run_folder, variant, s, r))
             for variant in checkpoints for s in senders for r in receivers]
    # With the blocks preset a layer's label starts with its number: the blocks before it (Hernandez et al.).
    labels = tuple([f"{i} {name}" if BLOCKS in patterns else name for i, name in enumerate(names)]
                   for names, patterns in ((senders, mjob.sender_layers), (receivers, mjob.receiver_layers)))
    names = (display_name(pair.front_meta, base.front_model), display_name(pair.end_meta, base.end_model))
    return Plan(run_folder, senders, receivers, checkpoints, controls, cells, base, labels, names), pair


def _write_random_networks(plan: Plan, pair: Pair) -> None:
    for variant, meta in (("random_sender", pair.front_meta), ("random_receiver", pair.end_meta)):
        control = plan.controls.get(variant)
        if control is None or control["seed"] is None:
            continue
        model = create_model(meta["model"], n_classes=meta["n_classes"], n_channels=meta["n_channels"], seed=control["seed"])
        info = {k: v for k, v in meta.items() if k != "provenance"}
        info.update(init_seed=control["seed"], epoch=0, iteration=0, random_control=True)
        # once per run folder: a resumed run or another shard must stitch the very same file (its digest is checked)
        publish_once(Path(control["checkpoint"]), lambda tmp: save_checkpoint(tmp, model.eval(), info))


def _clear_previous(run_folder: Path) -> None:
    """With --overwrite: remove what an earlier matrix run wrote there (the pickle, its marker, first)."""
    (run_folder / "matrix.pkl").unlink(missing_ok=True)
    (run_folder / RUN_INFO).unlink(missing_ok=True)
    for sub in ("cells", "controls"):
        shutil.rmtree(run_folder / sub, ignore_errors=True)
    for path in list(run_folder.glob("*.csv")) + [run_folder / "matrix.png", run_folder / "images.png"]:
        path.unlink(missing_ok=True)


def cka_matrix_of(pair: Pair, job: StitchJob, senders: List[str], receivers: List[str]) -> Tuple[pd.DataFrame, int]:
    """Linear CKA (biased HSIC, all samples) of every sender layer with every receiver layer on the first
    ``measure_samples`` test images: the ``cka`` value of each cell's pickle, for all pairs in one pass."""
    layers = [r for r in receivers if r != INPUT_LAYER]  # 'input' is no module: no CKA column (NaN)
    if not layers:
        return _frame({}, senders, receivers), 0
    loader = pair.loader(job, "test", 250)
    sim = layer_similarity(pair.front_model, pair.end_model, loader, layers1=senders, layers2=layers, measure="cka",
                           max_samples=job.measure_samples)
    frame = sim.to_frame().loc[senders, layers].reindex(columns=list(receivers))
    return frame.rename_axis("sender layer"), int(sim.n_samples)


def _frame(values: Dict[Tuple[str, str], float], senders, receivers) -> pd.DataFrame:
    data = [[values.get((s, r), np.nan) for r in receivers] for s in senders]
    return pd.DataFrame(data, index=pd.Index(senders, name="sender layer"), columns=list(receivers))


def run_matrix(mjob: MatrixJob, argv=None, progress: Optional[bool] = None) -> Tuple[Optional[Path], Optional[Dict[str, Any]]]:
    """Plan, run the cells, write the tables, ``matrix.png`` and (last) ``matrix.pkl``; returns its path and content.

    Under torchrun each rank runs its slice of the cells (:func:`src.sweep.shard.cells_for`) on its own
    device; rank 0 prepares the run folder, waits for all ranks and writes the matrix files. With
    ``shard`` only that slice's cell files are written (``(None, None)`` is returned; ``--collect`` makes
    the tables). Cells whose pickle is finished with the same parameters are skipped (``--resume``).
    """
    from src.distributed import barrier, main_does, session

    started_all = time.perf_counter()
    requested = resolve_device(mjob.job.device or get_config().device)
    # ranks whose slices end early wait for the others at the last barrier: allow a long sweep (default: 30 min)
    with session(requested, timeout=SWEEP_TIMEOUT) as world:
        if world.distributed:
            mjob = replace(mjob, job=replace(mjob.job, device=str(world.device)))
        plan, trained_pair = plan_matrix(mjob)
        barrier()  # every rank has checked the run folder before rank 0 creates it
        claim = None
        if world.is_main and mjob.shard is None:  # shards of a job array share the folder (each cell is claimed)
            claim = claim_output(plan.run_folder)
        try:
            main_does(_prepare_folder, mjob, plan, trained_pair, argv)
            pairs = _load_pairs(plan, trained_pair)
            mine = cells_for(plan.cells, mjob.shard, world.rank, world.size)
            done = run_cells(plan, pairs, mine, argv, progress, label=f"[rank {world.rank}] " if world.distributed else "")
            barrier()  # every rank's cells are on disk
            if not world.is_main or mjob.shard is not None:
                return None, None
            summary = summarise(mjob, plan, pairs, done, argv)
            summary["timing"]["total_seconds"] = time.perf_counter() - started_all
            return _write_outputs(plan, summary, mjob.depth_axes), summary
        finally:
            if claim is not None:
                claim.release()


def _prepare_folder(mjob: MatrixJob, plan: Plan, pair: Pair, argv) -> None:
    """Rank 0, before any cell: refuse or empty an existing folder (or, joining, check its run.json), write run.json
    and the random control networks."""
    folder = plan.run_folder
    if not joins_run(mjob):
        refuse_existing_run(folder, plan.base.overwrite)  # again, now that no other run can get past this point
        if plan.base.overwrite and folder.exists():
            _clear_previous(folder)
    folder.mkdir(parents=True, exist_ok=True)
    publish_or_check(folder, run_parameters(mjob, plan.base, pair.digests or {}, plan.senders, plan.receivers), argv)
    _write_random_networks(plan, pair)


def _load_pairs(plan: Plan, trained_pair: Pair) -> Dict[str, Pair]:
    pairs = {"trained": trained_pair}
    for variant in plan.checkpoints:
        if variant not in pairs:
            sender, receiver = plan.checkpoints[variant]
            pairs[variant] = load_pair(replace(plan.base, front_model=sender, end_model=receiver))
    return pairs


@dataclass
class Done:
    """What :func:`run_cells` leaves for the tables: results and wall times of the cells this process ran."""

    results: Dict[str, Dict[Tuple[str, str], Dict]]
    seconds: Dict[str, Dict[Tuple[str, str], float]]
    cache_seconds: Dict[str, Dict[str, float]]
    twins: Any


def run_cells(plan: Plan, pairs: Dict[str, Pair], cells: Sequence[Cell], argv=None, progress: Optional[bool] = None,
              label: str = "") -> Done:
    """Run ``cells`` (in plan order): each sender layer's cache once, then its receiver layers; skips finished cells
    and cells another process has claimed. Each cell is seeded by its own job (:func:`build_cell`), never by what ran before."""
    from tqdm import tqdm

    folder = plan.run_folder
    done = Done({v: {} for v in plan.checkpoints}, {v: {} for v in plan.checkpoints}, {v: {} for v in plan.checkpoints},
                SimilarityTwins(plan.base.objective == "both", plan.senders, plan.receivers))
    bar = tqdm(total=len(cells), desc=f"{label}stitch matrix", unit="cell", disable=None if progress is None else not progress)
    groups: Dict[Tuple[str, str], List[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.variant, cell.job.front_layer), []).append(cell)
    todos = {key: [c for c in group if not _finished(c, pairs[key[0]], done.twins)] for key, group in groups.items()}
    caches = {variant: MatrixCaches(pairs[variant], plan.base, EVAL_BATCH) for variant in pairs}
    for variant, variant_caches in caches.items():
        todo = [c for (v, _), cells in todos.items() if v == variant for c in cells]
        started = time.perf_counter()
        variant_caches.prefill(list(dict.fromkeys(c.job.front_layer for c in todo)),
                               list(dict.fromkeys(c.job.end_layer for c in todo)))
        done.cache_seconds[variant][PREFILL] = time.perf_counter() - started
    for (variant, s), group in groups.items():
        pair = pairs[variant]
        todo = todos[(variant, s)]
        bar.update(len(group) - len(todo))
        if len(todo) < len(group):
            tqdm.write(f"{label}{variant:15s} {s}: {len(group) - len(todo)} finished cell(s) kept")
        sender = None
        for cell in todo:
            claim = try_claim(cell.path)
            if claim is None:  # another process is running this cell
                tqdm.write(f"{label}{variant:15s} {s} -> {cell.job.end_layer}: running elsewhere, skipped")
                bar.update()
                continue
            with claim:
                if _finished(cell, pair, done.twins):  # finished meanwhile
                    bar.update()
                    continue
                remove_leftovers(cell.path)
                remove_leftovers(mse_cell_path(cell.path))
                if sender is None:
                    started = time.perf_counter()
                    sender = caches[variant].sender(s)
                    done.cache_seconds[variant][s] = time.perf_counter() - started
                r = cell.job.end_layer
                started = time.perf_counter()
                timing = {"cache_seconds": done.cache_seconds[variant][s], "cache_shared_by_cells": len(plan.receivers)}
                shared = caches[variant].cell(sender, r)
                frank = build_cell(pair, cell.job)
                result = run_stitch(pair, cell.job, folder, argv, cache=shared.train, frank=frank, timing=timing,
                                    shared=shared)
                twin = done.twins.run(pair, cell, frank, folder, argv, shared, timing)
                write_result(cell.path, result)  # last: the cell's pickle marks the whole cell (and its twin) done
            done.seconds[variant][(s, r)] = time.perf_counter() - started
            done.results[variant][(s, r)] = result
            acc = result["model_results"]
            bar.update()
            mse = f", mse stitch {twin['model_results']['trans']['acc']:.4f}" if twin is not None else ""
            tqdm.write(f"{label}{variant:15s} {s} -> {r}: stitched acc {acc['trans']['acc']:.4f}, least squares "
                       f"{acc['ps_inv']['acc']:.4f}{mse} ({done.seconds[variant][(s, r)]:.1f} s)")
        del sender
    bar.close()
    return done


def _finished(cell: Cell, pair: Pair, twins: SimilarityTwins) -> bool:
    """The cell's pickle is finished with its parameters, and so is its similarity twin when it has one."""
    if finished_result(cell.path, cell.job, pair.digests) is None:
        return False
    return not twins.needed(cell) or twins.finished(cell, pair.digests) is not None


def _cell_seconds(result: Dict[str, Any]) -> float:
    """A cell's wall time from its own record (statistics, epochs, evaluation) when another process ran it."""
    t = result.get("timing", {})
    return float(t.get("statistics_seconds", 0.0) + sum(t.get("epoch_seconds", [])) + t.get("evaluation_seconds", 0.0))


def summarise(mjob: MatrixJob, plan: Plan, pairs: Dict[str, Pair], done: Optional[Done], argv=None) -> Dict[str, Any]:
    """The matrix summary from every cell: those in ``done`` as they are, the others read from their finished pickles.

    A cell that is not finished (missing, incomplete or computed with other parameters) is a one-line
    UserError listing them: run their shards again or resume."""
    done = done or Done({}, {}, {}, SimilarityTwins(plan.base.objective == "both", plan.senders, plan.receivers))
    twins = done.twins
    results: Dict[str, Dict] = {v: {} for v in plan.checkpoints}
    seconds: Dict[str, Dict] = {v: {} for v in plan.checkpoints}
    missing = []
    for cell in plan.cells:
        key = (cell.job.front_layer, cell.job.end_layer)
        result = done.results.get(cell.variant, {}).get(key)
        if result is None:
            result = finished_result(cell.path, cell.job, pairs[cell.variant].digests)
            twin = twins.finished(cell, pairs[cell.variant].digests) if twins.needed(cell) else None
            if twin is not None:
                twins.adopt(cell, twin)
            elif twins.needed(cell):
                result = None
        if result is None:
            missing.append(str(cell.path.relative_to(plan.run_folder).with_suffix("")))
            continue
        results[cell.variant][key] = result
        seconds[cell.variant][key] = done.seconds.get(cell.variant, {}).get(key, _cell_seconds(result))
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise UserError(f"{len(missing)} of {len(plan.cells)} cells of {plan.run_folder} are not finished ({shown}); "
                        f"run their shards again or rerun with --resume (finished cells are kept)")
    started = time.perf_counter()
    cka = {v: cka_matrix_of(pairs[v], plan.base, plan.senders, plan.receivers) for v in plan.checkpoints}
    cka_samples = cka["trained"][1]
    cka = {v: frame for v, (frame, _) in cka.items()}
    cka_seconds = time.perf_counter() - started
    summary = _assemble(mjob, plan, results, cka, seconds, done.cache_seconds, cka_seconds, argv)
    extra = twins.tables()
    if "matrix_mse" in extra:
        summary["tables"]["matrix_mse"] = summary["matrix_mse"] = extra.pop("matrix_mse")
    summary.update(extra)
    if INPUT_LAYER in plan.receivers:
        summary["images"] = {s: {"task" if plan.base.objective == "both" else plan.base.objective:
                                 results["trained"][(s, INPUT_LAYER)]["images"],
                                 **({"mse": twins.results[(s, INPUT_LAYER)]["images"]} if twins.enabled else {})}
                             for s in plan.senders}
    trained_pair = pairs["trained"]
    summary["cka_samples"] = cka_samples
    summary["train_samples"] = trained_pair.plain_train(plan.base).num_samples
    summary["test_samples"] = trained_pair.fixed_loader(plan.base, "test", EVAL_BATCH).num_samples
    summary["timing"]["total_seconds"] = float(sum(frame for v in seconds.values() for frame in v.values()))
    return summary


def collect_matrix(run_folder, argv=None) -> Tuple[Path, Dict[str, Any]]:
    """``stitch_matrix.py --collect RUN_DIR``: the matrix files from the finished cells of a run folder (no training)."""
    folder = Path(run_folder)
    mjob = matrix_job_from_info(read_run_info(folder), folder)
    plan, trained_pair = plan_matrix(mjob)
    with claim_output(plan.run_folder):
        check_same_run(plan.run_folder, run_parameters(mjob, plan.base, trained_pair.digests or {}, plan.senders,
                                                       plan.receivers))
        summary = summarise(mjob, plan, _load_pairs(plan, trained_pair), None, argv)
        return _write_outputs(plan, summary, mjob.depth_axes), summary


def _assemble(mjob, plan: Plan, results, cka, seconds, cache_seconds, cka_seconds, argv) -> Dict[str, Any]:
    S, R = plan.senders, plan.receivers
    tables: Dict[str, pd.DataFrame] = {}
    spearmans, triangles, end_acc = {}, {}, {}
    for variant, cells in results.items():
        acc = _frame({k: r["model_results"]["trans"]["acc"] for k, r in cells.items()}, S, R)
        ends = {k: r["model_results"]["end"]["acc"] for k, r in cells.items()}
        end_acc[variant] = float(next(iter(ends.values())))
        tables[table_name("matrix", variant)] = acc
        tables[table_name("relative", variant)] = acc / _frame(ends, S, R)
        tables[table_name("ps_inv", variant)] = _frame({k: r["model_results"]["ps_inv"]["acc"] for k, r in cells.items()}, S, R)
        tables[table_name("cka", variant)] = cka[variant]
        spearmans[variant] = spearman(acc.to_numpy(), cka[variant].to_numpy())
        triangles[variant] = {"stitched": _triangle(acc), "least_squares": _triangle(tables[table_name("ps_inv", variant)]),
                              "cka": _triangle(cka[variant])}
    base = plan.base
    return {
        "format": FORMAT, "version": VERSION,
        "params": dict(jsonable(vars(base)), front_layer=None, end_layer=None,
                       sender_patterns=list(mjob.sender_layers), receiver_patterns=list(mjob.receiver_layers),
                       controls=mjob.controls, depth_axes=mjob.depth_axes, control_seed=mjob.control_seed,
                       run_folder=str(plan.run_folder)),
        "models": {"sender": plan.names[0], "receiver": plan.names[1]},
        "sender_layers": S, "receiver_layers": R,
        "sender_depth": proportional_depths(len(S)).tolist(), "receiver_depth": proportional_depths(len(R)).tolist(),
        "labels": {"senders": plan.labels[0], "receivers": plan.labels[1]},
        "tables": tables, **{name: tables[name] for name in TABLES},
        "end_acc": end_acc, "spearman": spearmans, "triangle": triangles,
        "controls": plan.controls, "checkpoints": {v: list(c) for v, c in plan.checkpoints.items()},
        "cells": {v: {f"{s}--{r}": str(cell_path(plan.run_folder, v, s, r)) for s in S for r in R} for v in results},
        "cka_split": "test",
        "timing": {"cell_seconds": {v: _frame(t, S, R) for v, t in seconds.items()},
                   "cache_seconds": cache_seconds, "cka_seconds": cka_seconds},
        "provenance": provenance(base, argv),
    }


def _triangle(frame: pd.DataFrame) -> Dict[str, float]:
    """The triangle statistic over the receiver layers proper: a stitch into the ``input`` generates an image, it
    is not a receiver depth (as in the EV / ES / SV groups, :func:`src.stitching.evess.cell_position`)."""
    return triangle_statistic(frame.drop(columns=[INPUT_LAYER], errors="ignore").to_numpy())


def _write_outputs(plan: Plan, summary: Dict[str, Any], depth_axes: bool) -> Path:
    folder = plan.run_folder
    for name, frame in summary["tables"].items():
        write_csv(folder / f"{name}.csv", frame, index=True)
    panels = [("stitched accuracy", summary["matrix"], "test accuracy"),
              (f"linear CKA ({summary['cka_samples']} test images)", summary["cka"], "CKA")]
    for variant in VARIANTS[1:]:
        if variant in summary["end_acc"]:
            panels.append((f"control: {variant.replace('_', ' ')}", summary["tables"][table_name("matrix", variant)],
                           "test accuracy"))
    base = plan.base
    title = (f"{plan.names[0]} -> {plan.names[1]}, {base.dataset}, {base.epochs} epoch(s), "
             f"{summary['train_samples']} training images (Spearman stitching vs CKA {summary['spearman']['trained']:.2f})")
    save_matrix_png(folder / "matrix.png", panels, depth_axes, labels=plan.labels, suptitle=title,
                    provenance=summary["provenance"])
    for name in ("evess", "evess_summary"):
        if name in summary:
            write_csv(folder / f"{name}.csv", summary[name], index=name == "evess_summary")
    if "images" in summary:
        save_image_grid(folder / "images.png", matrix_grids(summary["images"]),
                        suptitle=f"{plan.names[0]} stitched into the input of {plan.names[1]}, {base.dataset}",
                        provenance=summary["provenance"])
    return write_pickle(folder / "matrix.pkl", summary)


def print_summary(summary: Dict[str, Any]) -> None:
    """The matrices, the Spearman correlations, the triangle statistics and the timing, as plain text."""
    for name, frame in summary["tables"].items():
        print(f"{name}:")
        print(frame.round(4).to_string())
    for variant, rho in summary["spearman"].items():
        tri = summary["triangle"][variant]["stitched"]
        print(f"{variant}: Spearman(stitching, CKA) = {rho:.4f}; stitched accuracy on/below the proportional diagonal "
              f"{tri['mean_on_or_below']:.4f} ({tri['cells_on_or_below']} cells) vs above {tri['mean_above']:.4f} "
              f"({tri['cells_above']} cells)")
    print_evess(summary)
    timing = summary["timing"]
    cells = pd.concat([frame.stack() for frame in timing["cell_seconds"].values()])
    print(f"wall time: {len(cells)} cells, {cells.mean():.1f} s per cell (min {cells.min():.1f}, max {cells.max():.1f}), "
          f"CKA {timing['cka_seconds']:.1f} s, total {timing['total_seconds']:.1f} s")
