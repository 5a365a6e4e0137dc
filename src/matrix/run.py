"""Running a stitch matrix's cells (``stitch_matrix.py``), on one process, across torchrun ranks or as job-array shards.

:func:`run_matrix` runs the planned cells with the steps of :mod:`src.stitching.run`: the networks are
loaded once per variant and each front layer's activations on the unaugmented training split are
computed once (:class:`~src.stitching.batches.FrontCache`) and reused for the least-squares statistics
and the training of every end layer; the other passes that depend on one layer only are cached per
layer too (:mod:`src.matrix.caches`), so a cell is exactly what ``stitch_nets.py --cache-front``
computes for that pair (same schema, same numbers with the same seed). Finished cells are kept
(:mod:`src.matrix.resume`), each cell is claimed before it runs, and ``--collect`` assembles the
tables from a folder's cell files (:func:`collect_matrix`).
"""
import shutil
import time
from datetime import timedelta
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple


import torch
from tqdm import tqdm

from src.config import get_config, resolve_device
from src.distributed import barrier, main_does, session
from src.models.checkpoint import save_checkpoint
from src.models.networks import network_kind, random_network
from src.results_io import NoRoom, atomic_write, check_free_space, claim_output, digest_path, try_claim
from src.stitching.run import (EVAL_BATCH, Pair, build_cell, expected_result_bytes, load_pair, run_stitch,
                              write_result)
from src.matrix.caches import MatrixCaches
from src.matrix.evess import SimilarityTwins, mse_cell_path
from src.data import DataSource
from src.matrix.plan import (Cell, Done, MatrixJob, Plan, joins_run, matrix_job_from_info, plan_matrix,
                              refuse_existing_run, variant_job)
from src.matrix.resume import remove_leftovers
from src.matrix.runinfo import (RUN_INFO, check_same_run, publish_once, publish_or_check,
                                read_run_info, run_parameters)
from src.matrix.shard import cells_for
from src.matrix.summary import cell_files, summarise, write_outputs

#: The key of ``timing["cache_seconds"][variant]`` for the one-pass caches of all layers (src.matrix.caches).
PREFILL = "all layers, one pass per split"
#: How long a torchrun rank may wait at a barrier for the others (their remaining cells).
SWEEP_TIMEOUT = timedelta(days=7)
#: The free space a sweep asks for before its first cell (src.results_io.check_free_space): this much per result
#: file left to write (a cell, and its similarity twin with --objective both) plus TABLES_BYTES for the tables,
#: matrix.png and matrix.pkl. Rough on purpose: a Tiny10 or ResNet cell is far smaller, a flattened stitch can be
#: larger, which the check before each cell's training catches (with the size of that cell's stitch).
CELL_BYTES = 2 << 20
TABLES_BYTES = 4 << 20


def _write_random_networks(plan: Plan, pair: Pair) -> None:
    """The control networks' files (a zoo checkpoint, or a model spec's weights file), once per run folder: a
    resumed run or another shard must stitch the very same file (its digest is checked)."""
    for variant, ref, meta in (("random_front", plan.base.front_model, pair.front_meta),
                               ("random_end", plan.base.end_model, pair.end_meta)):
        control = plan.controls.get(variant)
        if control is None or control["seed"] is None or network_kind(ref) == "module":
            continue
        model = random_network(ref, meta, control["seed"], pair.info)
        if network_kind(ref) == "spec":
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            publish_once(Path(control["weights"]), lambda tmp: atomic_write(tmp, lambda f: torch.save(state, f)))
            continue
        info = {k: v for k, v in meta.items() if k not in ("provenance", "network")}
        info.update(init_seed=control["seed"], epoch=0, iteration=0, random_control=True)
        publish_once(Path(control["checkpoint"]), lambda tmp: save_checkpoint(tmp, model.eval(), info))


def _clear_previous(run_folder: Path) -> None:
    """With --overwrite: remove what an earlier matrix run wrote there (the pickle, its marker, first)."""
    (run_folder / "matrix.pkl").unlink(missing_ok=True)
    digest_path(run_folder / "matrix.pkl").unlink(missing_ok=True)
    (run_folder / RUN_INFO).unlink(missing_ok=True)
    for sub in ("cells", "controls"):
        shutil.rmtree(run_folder / sub, ignore_errors=True)
    for path in list(run_folder.glob("*.csv")) + [run_folder / "matrix.png", run_folder / "images.png"]:
        path.unlink(missing_ok=True)


def run_matrix(mjob: MatrixJob, argv=None, progress: Optional[bool] = None,
               data: Optional[DataSource] = None) -> Tuple[Optional[Path], Optional[Dict[str, Any]]]:
    """Plan, run the cells, write the tables, ``matrix.png`` and (last) ``matrix.pkl``; returns its path and content.

    Under torchrun each rank runs its slice of the cells (:func:`src.matrix.shard.cells_for`) on its own
    device; rank 0 prepares the run folder, waits for all ranks and writes the matrix files. With
    ``shard`` only that slice's cell files are written (``(None, None)`` is returned; ``--collect`` makes
    the tables). Cells whose pickle is finished with the same parameters are skipped (``--resume``).
    ``data``: the user's own data (:class:`~src.data.source.UserData`), else the job's data set.
    """
    started_all = time.perf_counter()
    requested = resolve_device(mjob.job.device or get_config().device)
    # ranks whose slices end early wait for the others at the last barrier: allow a long sweep (default: 30 min)
    with session(requested, timeout=SWEEP_TIMEOUT) as world:
        if world.distributed:
            mjob = replace(mjob, job=replace(mjob.job, device=str(world.device)))
        plan, trained_pair = plan_matrix(mjob, data=data)
        barrier()  # every rank has checked the run folder before rank 0 creates it
        claim = None
        if world.is_main and mjob.shard is None:  # shards of a job array share the folder (each cell is claimed)
            claim = claim_output(plan.run_folder)
        try:
            mine = cells_for(plan.cells, mjob.shard, world.rank, world.size)
            if not joins_run(mjob):  # a new run: every cell is left to run; room for them before the folder is made
                _check_room(plan, mine)
            main_does(_prepare_folder, mjob, plan, trained_pair, argv)
            pairs = _load_pairs(plan, trained_pair)
            done = run_cells(plan, pairs, mine, argv, progress, label=f"[rank {world.rank}] " if world.distributed else "")
            barrier()  # every rank's cells are on disk
            if not world.is_main or mjob.shard is not None:
                return None, None
            summary = summarise(mjob, plan, pairs, done, argv)
            summary["timing"]["total_seconds"] = time.perf_counter() - started_all
            return write_outputs(plan, summary, mjob.depth_axes), summary
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
    publish_or_check(folder, run_parameters(mjob, plan.base, pair.digests or {}, plan.front_layers, plan.end_layers), argv)
    _write_random_networks(plan, pair)


def _load_pairs(plan: Plan, trained_pair: Pair) -> Dict[str, Pair]:
    pairs = {"trained": trained_pair}
    for variant in plan.checkpoints:
        if variant not in pairs:
            job = variant_job(plan.base, plan.checkpoints[variant], plan.weights.get(variant, (None, None)))
            pairs[variant] = load_pair(job, data=trained_pair.data)
    return pairs


def run_cells(plan: Plan, pairs: Dict[str, Pair], cells: Sequence[Cell], argv=None, progress: Optional[bool] = None,
              label: str = "") -> Done:
    """Run ``cells`` (in plan order): each front layer's cache once, then its end layers; skips finished cells
    and cells another process has claimed. Each cell is seeded by its own job (:func:`build_cell`), never by what ran before."""
    folder = plan.run_folder
    done = Done({v: {} for v in plan.checkpoints}, {v: {} for v in plan.checkpoints}, {v: {} for v in plan.checkpoints},
                SimilarityTwins(plan.base.objective == "both", plan.front_layers, plan.end_layers))
    bar = tqdm(total=len(cells), desc=f"{label}stitch matrix", unit="cell", disable=None if progress is None else not progress)
    groups: Dict[Tuple[str, str], List[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.variant, cell.job.front_layer), []).append(cell)
    todos = {key: [c for c in group if not _finished(c, pairs[key[0]], done.twins, folder, label)]
             for key, group in groups.items()}
    _check_room(plan, [c for group in todos.values() for c in group])  # those not finished (--resume, shards)
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
        front = None
        for cell in todo:
            claim = try_claim(cell.path)
            if claim is None:  # another process is running this cell
                tqdm.write(f"{label}{variant:15s} {s} -> {cell.job.end_layer}: running elsewhere, skipped")
                bar.update()
                continue
            with claim:
                if _finished(cell, pair, done.twins):  # finished meanwhile (its damaged files were reported above)
                    bar.update()
                    continue
                remove_leftovers(cell.path)
                remove_leftovers(mse_cell_path(cell.path))
                if front is None:
                    started = time.perf_counter()
                    front = caches[variant].front(s)
                    done.cache_seconds[variant][s] = time.perf_counter() - started
                r = cell.job.end_layer
                started = time.perf_counter()
                timing = {"cache_seconds": done.cache_seconds[variant][s], "cache_shared_by_cells": len(plan.end_layers)}
                shared = caches[variant].cell(front, r)
                frank = build_cell(pair, cell.job)
                files = 2 if done.twins.needed(cell) else 1
                size = expected_result_bytes(frank, cell.job, pair.plain_train(plan.base).num_samples)
                check_free_space(cell.path.parent, files * size, f"the result of cell {s} -> {r}")
                try:
                    result = run_stitch(pair, cell.job, folder, argv, cache=shared.train, frank=frank, timing=timing,
                                        shared=shared)
                    twin = done.twins.run(pair, cell, frank, folder, argv, shared, timing)
                    write_result(cell.path, result)  # last: the cell's pickle marks the whole cell (and its twin) done
                except NoRoom as err:  # nothing of this cell counts as finished; the cells written before are kept
                    raise NoRoom(f"{err}; the finished cells are kept: rerun with --resume once there is room",
                                 err.path, err.errno) from err
            done.seconds[variant][(s, r)] = time.perf_counter() - started
            done.results[variant][(s, r)] = result
            acc = result["model_results"]
            bar.update()
            mse = f", mse stitch {twin['model_results']['trans']['acc']:.4f}" if twin is not None else ""
            tqdm.write(f"{label}{variant:15s} {s} -> {r}: stitched acc {acc['trans']['acc']:.4f}, least squares "
                       f"{acc['ps_inv']['acc']:.4f}{mse} ({done.seconds[variant][(s, r)]:.1f} s)")
        del front
    bar.close()
    return done


def _finished(cell: Cell, pair: Pair, twins: SimilarityTwins, folder: Optional[Path] = None,
              label: Optional[str] = None) -> bool:
    """The cell's pickle is finished with its parameters and matches its digest, and so is its similarity twin's when
    it has one. With ``label``, a damaged file (changed since written, truncated) is reported in one line by name."""
    files = cell_files(cell, twins, pair.digests)
    if label is not None:
        for file in files:
            if file.damaged:
                tqdm.write(f"{label}{cell.variant:15s} {cell.job.front_layer} -> {cell.job.end_layer}: "
                           f"{file.path.relative_to(folder)} {file.problem}: running the cell again")
    return all(file.finished for file in files)


def _check_room(plan: Plan, todo: Sequence[Cell]) -> None:
    """Before the first cell: room for the result files left to write and the tables (CELL_BYTES, TABLES_BYTES)."""
    if not todo:
        return
    twins = SimilarityTwins(plan.base.objective == "both", plan.front_layers, plan.end_layers)
    files = sum(2 if twins.needed(cell) else 1 for cell in todo)
    check_free_space(plan.run_folder, files * CELL_BYTES + TABLES_BYTES,
                     f"the {len(todo)} cell(s) left to run ({files} result file(s) at a rough {CELL_BYTES >> 20} MiB "
                     f"each, and the tables)")


def collect_matrix(run_folder, argv=None) -> Tuple[Path, Dict[str, Any]]:
    """``stitch_matrix.py --collect RUN_DIR``: the matrix files from the finished cells of a run folder (no training)."""
    folder = Path(run_folder)
    mjob = matrix_job_from_info(read_run_info(folder), folder)
    plan, trained_pair = plan_matrix(mjob)
    with claim_output(plan.run_folder):
        check_same_run(plan.run_folder, run_parameters(mjob, plan.base, trained_pair.digests or {}, plan.front_layers,
                                                       plan.end_layers))
        summary = summarise(mjob, plan, _load_pairs(plan, trained_pair), None, argv)
        return write_outputs(plan, summary, mjob.depth_axes), summary
