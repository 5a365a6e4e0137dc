"""A stitch matrix's tables from its cells' results: accuracy, relative accuracy, least squares, CKA, controls,
the triangle statistic and Spearman correlations, written as CSVs, ``matrix.png`` and (last) ``matrix.pkl``."""
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from src.errors import UserError
from src.provenance import jsonable, provenance
from src.results_io import NoRoom, read_pickle, write_csv, write_pickle
from src.similarity import layer_similarity
from src.stitching.cut import INPUT_LAYER
from src.stitching.job import StitchJob
from src.stitching.run import EVAL_BATCH, Pair
from src.matrix.evess import SimilarityTwins, mse_cell_path, print_evess
from src.matrix.images import matrix_grids
from src.stitching.images import save_image_grid
from src.matrix.plan import VARIANTS, Done, MatrixJob, Plan, cell_path, table_name
from src.matrix.plot import save_matrix_png
from src.matrix.resume import CellFile, cell_file
from src.matrix.runinfo import today_name
from src.matrix.stats import proportional_depths, spearman, triangle_statistic

FORMAT = "drfrank-stitch-matrix"
#: 2: the networks are named front / end throughout (version 1 said sender / receiver; :func:`load_matrix` reads both).
VERSION = 2
#: Files of a run folder that a matrix run writes (replaced as a whole with --overwrite).
TABLES = ("matrix", "relative", "ps_inv", "cka")


def cka_matrix_of(pair: Pair, job: StitchJob, front_layers: List[str],
                  end_layers: List[str]) -> Tuple[pd.DataFrame, int, Dict[str, str]]:
    """Linear CKA (biased HSIC, all samples) of every front layer with every end layer on the first
    ``measure_samples`` test images: the ``cka`` value of each cell's pickle, for all pairs in one pass; and the
    reasons of the cells where CKA is degenerate on these data (``{"front--end": reason}``; NaN in the table)."""
    layers = [r for r in end_layers if r != INPUT_LAYER]  # 'input' is no module: no CKA column (NaN)
    if not layers:
        return _frame({}, front_layers, end_layers), 0, {}
    loader = pair.loader(job, "test", 250)
    sim = layer_similarity(pair.front_model, pair.end_model, loader, layers1=front_layers, layers2=layers, measure="cka",
                           max_samples=job.measure_samples)
    frame = sim.to_frame().loc[front_layers, layers].reindex(columns=list(end_layers))
    degenerate = {f"{a}--{b}": reason for (a, b), reason in getattr(sim, "degenerate", {}).items()}
    return frame.rename_axis("front layer"), int(sim.n_samples), degenerate


def _frame(values: Dict[Tuple[str, str], float], front_layers, end_layers) -> pd.DataFrame:
    data = [[values.get((s, r), np.nan) for r in end_layers] for s in front_layers]
    return pd.DataFrame(data, index=pd.Index(front_layers, name="front layer"), columns=list(end_layers))


def _cell_seconds(result: Dict[str, Any]) -> float:
    """A cell's wall time from its own record (statistics, epochs, evaluation) when another process ran it."""
    t = result.get("timing", {})
    return float(t.get("statistics_seconds", 0.0) + sum(t.get("epoch_seconds", [])) + t.get("evaluation_seconds", 0.0))


def cell_files(cell, twins: SimilarityTwins, digests: Optional[Dict[str, str]]) -> List[CellFile]:
    """The state of a cell's file and, with ``--objective both``, of its similarity twin's (:mod:`src.matrix.resume`)."""
    files = [cell_file(cell.path, cell.job, digests)]
    if twins.needed(cell):
        files.append(cell_file(mse_cell_path(cell.path), twins.twin_job(cell), digests, needs=("evess",)))
    return files


def summarise(mjob: MatrixJob, plan: Plan, pairs: Dict[str, Pair], done: Optional[Done], argv=None) -> Dict[str, Any]:
    """The matrix summary from every cell: those in ``done`` as they are, the others read from their finished pickles.

    A cell that is not finished (missing, incomplete or computed with other parameters) or damaged (its pickle
    changed since it was written: it does not match its digest file) is a one-line UserError listing them: run
    their shards again or resume. Cells without a digest file (written before digests were recorded) are accepted
    unverified, with one note on stderr naming them (:mod:`src.matrix.resume`)."""
    done = done or Done({}, {}, {}, SimilarityTwins(plan.base.objective == "both", plan.front_layers, plan.end_layers))
    twins = done.twins
    results: Dict[str, Dict] = {v: {} for v in plan.checkpoints}
    seconds: Dict[str, Dict] = {v: {} for v in plan.checkpoints}
    missing: List[str] = []
    damaged: Dict[str, List[str]] = {}  # why (resume.CHANGED / UNREADABLE) -> cell files
    unverified: List[str] = []
    for cell in plan.cells:
        key = (cell.job.front_layer, cell.job.end_layer)
        result = done.results.get(cell.variant, {}).get(key)
        if result is None:
            files = cell_files(cell, twins, pairs[cell.variant].digests)
            broken = [f for f in files if f.damaged]
            if broken:
                for f in broken:
                    damaged.setdefault(f.problem, []).append(_name(plan, f.path))
                continue
            if not all(f.finished for f in files):
                missing.append(_name(plan, cell.path))
                continue
            unverified.extend(_name(plan, f.path) for f in files if not f.verified)
            result = files[0].result
            if twins.needed(cell):
                twins.adopt(cell, files[1].result)
        results[cell.variant][key] = result
        seconds[cell.variant][key] = done.seconds.get(cell.variant, {}).get(key, _cell_seconds(result))
    if missing and not damaged:
        raise UserError(f"{len(missing)} of {len(plan.cells)} cells of {plan.run_folder} are not finished "
                        f"({_shown(missing)}); run their shards again or rerun with --resume (finished cells are kept)")
    if damaged:
        cells = len(missing) + len({name for names in damaged.values() for name in names})
        parts = ([f"{_shown(missing)}: not finished"] if missing else []) + \
                [f"{_shown(names)}: {why}" for why, names in damaged.items()]
        raise UserError(f"{cells} of {len(plan.cells)} cells of {plan.run_folder} are not finished or damaged "
                        f"({'; '.join(parts)}); rerun with --resume (finished cells are kept, damaged ones run again)")
    if unverified:
        print(f"note: {len(unverified)} cell file(s) of {plan.run_folder} have no .sha256 digest file (written "
              f"before digests were recorded), accepted unverified: {_shown(unverified)}", file=sys.stderr)
    started = time.perf_counter()
    cka = {v: cka_matrix_of(pairs[v], plan.base, plan.front_layers, plan.end_layers) for v in plan.checkpoints}
    cka_samples = cka["trained"][1]
    degenerate = {table_name("cka", v): reasons for v, (_, _, reasons) in cka.items() if reasons}
    cka = {v: frame for v, (frame, _, _) in cka.items()}
    cka_seconds = time.perf_counter() - started
    summary = _assemble(mjob, plan, results, cka, seconds, done.cache_seconds, cka_seconds, argv)
    extra = twins.tables()
    if "matrix_mse" in extra:
        summary["tables"]["matrix_mse"] = summary["matrix_mse"] = extra.pop("matrix_mse")
    summary.update(extra)
    if INPUT_LAYER in plan.end_layers:
        summary["images"] = {s: {"task" if plan.base.objective == "both" else plan.base.objective:
                                 results["trained"][(s, INPUT_LAYER)]["images"],
                                 **({"mse": twins.results[(s, INPUT_LAYER)]["images"]} if twins.enabled else {})}
                             for s in plan.front_layers}
    trained_pair = pairs["trained"]
    summary["cka_samples"] = cka_samples
    summary["degenerate"] = degenerate  # {table: {"front--end": reason}}: the NaN cells of a CKA table, and why
    summary["train_samples"] = trained_pair.plain_train(plan.base).num_samples
    summary["test_samples"] = trained_pair.fixed_loader(plan.base, "test", EVAL_BATCH).num_samples
    summary["timing"]["total_seconds"] = float(sum(frame for v in seconds.values() for frame in v.values()))
    return summary


def _assemble(mjob, plan: Plan, results, cka, seconds, cache_seconds, cka_seconds, argv) -> Dict[str, Any]:
    S, R = plan.front_layers, plan.end_layers
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
                       front_patterns=list(mjob.front_layers), end_patterns=list(mjob.end_layers),
                       controls=mjob.controls, depth_axes=mjob.depth_axes, control_seed=mjob.control_seed,
                       run_folder=str(plan.run_folder)),
        "models": {"front": plan.names[0], "end": plan.names[1]},
        "front_layers": S, "end_layers": R,
        "front_depth": proportional_depths(len(S)).tolist(), "end_depth": proportional_depths(len(R)).tolist(),
        "labels": {"front": plan.labels[0], "end": plan.labels[1]},
        "tables": tables, **{name: tables[name] for name in TABLES},
        "end_acc": end_acc, "spearman": spearmans, "triangle": triangles,
        "controls": plan.controls, "checkpoints": {v: list(c) for v, c in plan.checkpoints.items()},
        "cells": {v: {f"{s}--{r}": str(cell_path(plan.run_folder, v, s, r)) for s in S for r in R} for v in results},
        "cka_split": "test",
        "timing": {"cell_seconds": {v: _frame(t, S, R) for v, t in seconds.items()},
                   "cache_seconds": cache_seconds, "cka_seconds": cka_seconds},
        "provenance": provenance(base, argv),
    }


def _shown(names: List[str], most: int = 8) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _name(plan: Plan, path: Path) -> str:
    """A cell file as the messages name it: relative to the run folder, without ``.pkl``."""
    return str(path.relative_to(plan.run_folder).with_suffix(""))


def _triangle(frame: pd.DataFrame) -> Dict[str, float]:
    """The triangle statistic over the end layers proper: a stitch into the ``input`` generates an image, it
    is not an end depth (as in the EV / ES / SV groups, :func:`src.matrix.evess.cell_position`)."""
    return triangle_statistic(frame.drop(columns=[INPUT_LAYER], errors="ignore").to_numpy())


def write_outputs(plan: Plan, summary: Dict[str, Any], depth_axes: bool) -> Path:
    """The tables (CSVs), ``matrix.png`` (and ``images.png``), then ``matrix.pkl`` with its digest, last. Out of room,
    one line that says the cells are all kept: ``--collect`` writes the tables again."""
    try:
        return _write_outputs(plan, summary, depth_axes)
    except NoRoom as err:
        raise NoRoom(f"{err}; every cell is finished and kept: stitch_matrix.py --collect {plan.run_folder} writes "
                     f"the tables once there is room", err.path, err.errno) from err


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
    return write_pickle(folder / "matrix.pkl", summary, digest=True)


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


def _renamed(value: Any) -> Any:
    """A version-1 matrix summary's keys, index and column names in today's words (sender -> front, receiver -> end)."""
    if isinstance(value, dict):
        return {today_name(k): _renamed(v) for k, v in value.items()}
    if isinstance(value, pd.DataFrame):
        return value.rename_axis(index=today_name(value.index.name)).rename(columns=today_name)
    return value


def load_matrix(path) -> Dict[str, Any]:
    """A ``matrix.pkl`` (the summary :func:`summarise` builds), read with the safe loader; files written before the
    networks were named front / end (version 1) come back with today's names (their provenance as it was)."""
    summary = read_pickle(path)
    if not isinstance(summary, dict) or summary.get("format") != FORMAT:
        raise UserError(f"{path} is not a stitch_matrix.py matrix.pkl; pass the matrix.pkl of a run folder")
    if summary.get("version", 1) < 2:
        summary = {today_name(k): (v if k == "provenance" else _renamed(v)) for k, v in summary.items()}
        summary["version"] = VERSION
    return summary
