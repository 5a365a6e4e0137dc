#!/usr/bin/env python
"""Stitch every front layer into every end layer: the stitch matrix, beside the CKA matrix of the same layers.

The front network is what Hernandez et al. (2022) call the sender, the end network their receiver;
--sender-layers and --receiver-layers are accepted as other names of --front-layers and --end-layers.

Writes results/<run-name>/: cells/<front_layer>--<end_layer>.pkl (each a stitch_nets.py result:
load_result, eval_stitch.py and load_summaries work on it), matrix.csv (stitched test accuracy; rows
front layers, columns end layers), relative.csv (divided by the end network's accuracy), ps_inv.csv
(least-squares stitch), cka.csv (linear CKA on the first --measure-samples test images), matrix.png
and matrix.pkl (all tables as DataFrames, Spearman correlation of stitching vs CKA, the triangle
statistic, controls, timing, parameters and provenance). With --controls also a random-weight front
into the end and the front into a random-weight end (*_control_random_front.csv, ...).

Layers: exact names, globs ('layer1.*'), regular expressions ('re:bn\\d') or the preset 'blocks' (the stem
output and every residual block's output; for networks without residual blocks each conv/bn stage).
Each front layer's activations on the unaugmented training split are computed once and reused for
every end layer (as stitch_nets.py --cache-front).

Scaling out (see README "Sweeps at scale"): `torchrun --nproc_per_node=N stitch_matrix.py ...` shares the
cells among N processes (one GPU each; gloo on the CPU); `--shard K/N` runs only the K-th of N slices (job
arrays) and `stitch_matrix.py --collect RUN_DIR` writes the tables once all slices are done; `--resume`
finishes an interrupted run, keeping its finished cells.

Example:
  python stitch_matrix.py model_weights/Tiny10/FashionMNIST/in0-gn0/8580.pt \\
      model_weights/Tiny10/FashionMNIST/in1-gn1/8580.pt --front-layers 're:bn\\d' --end-layers 're:bn\\d' \\
      -d fashion --preset hernandez -e 2 --max-samples 10000 --controls --run-name t10-matrix
"""
import argparse
import sys

from src.cli import run_main, script_argv
from src.errors import UserError
from src.stitching.options import add_stitch_options


def parse_args(argv=None):
    from src.stitching.job import StitchJob
    from src.matrix.plan import MatrixJob
    from src.matrix.shard import parse_shard

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("front", nargs="?", help="the front network (Hernandez et al.'s sender): a checkpoint, or a model "
                                            "spec (torchvision:NAME, timm:NAME[?k=v,...], MODULE:FUNCTION) with --front-weights")
    p.add_argument("end", nargs="?", help="the end network (Hernandez et al.'s receiver), as front (with --end-weights)")
    p.add_argument("--fronts", "--senders", nargs="+", default=None, metavar="NET",
                   help="instead of FRONT END: several front networks, each stitched into every network of --ends "
                        "(one run folder per pair under --run-name, pairs.csv and pairs.png beside them)")
    p.add_argument("--ends", "--receivers", nargs="+", default=None, metavar="NET", help="the end networks of --fronts")
    p.add_argument("--front-layers", "--sender-layers", dest="front_layers", nargs="+", required=True,
                   metavar="PATTERN", help="front layers (rows): names, globs, re:REGEX or blocks")
    p.add_argument("--end-layers", "--receiver-layers", dest="end_layers", nargs="+", required=True,
                   metavar="PATTERN", help="end layers (columns): names, globs, re:REGEX, blocks or input")
    p.add_argument("--controls", action="store_true",
                   help="also a random-weight front into the end and the front into a random-weight end "
                        "(the iteration-0 checkpoint 0.pt beside a checkpoint, else a fresh network)")
    p.add_argument("--control-seed", type=int, default=0,
                   help="seed of a freshly initialised control network (front: this, end: this + 1); default 0")
    p.add_argument("--depth-axes", action="store_true",
                   help="draw cells at proportional depth (i/(I-1), j/(J-1)) so networks of different lengths compare")
    p.add_argument("--resume", action="store_true",
                   help="finish an existing run folder: keep its finished cells, run the others; refused if the run's "
                        "parameters (run.json) differ")
    p.add_argument("--shard", type=parse_shard, default=None, metavar="K/N",
                   help="run only the K-th (from 1) of N deterministic slices of the cells and write their cell files; "
                        "then stitch_matrix.py --collect RUN_DIR writes the tables")
    add_stitch_options(p, matrix=True)
    ns = vars(p.parse_args(argv))
    matrix = {k: ns.pop(k) for k in ("front_layers", "end_layers", "controls", "control_seed", "depth_axes",
                                     "resume", "shard")}
    front, end, fronts, ends = (ns.pop(k) for k in ("front", "end", "fronts", "ends"))
    if (fronts is None) != (ends is None) or (fronts is not None and (front or end)) or \
            (fronts is None and not (front and end)):
        raise UserError("give two networks (FRONT END), or several as --fronts NET [NET ...] --ends NET [NET ...]")
    if fronts is not None and (ns["front_weights"] or ns["end_weights"]):
        raise UserError("--front-weights / --end-weights are for one FRONT END pair; give --fronts / --ends as "
                        "checkpoints")
    pairs = None if fronts is None else (fronts, ends)
    front, end = (front, end) if pairs is None else (fronts[0], ends[-1])  # each pair's networks replace these
    job = StitchJob(front_model=front, end_model=end, cache_front=True, no_augment=True, **ns)
    return MatrixJob(job=job, pairs=pairs, **matrix)


def parse_collect(argv):
    p = argparse.ArgumentParser(prog="stitch_matrix.py --collect",
                                description="write the matrix files of a run folder from its finished cell files")
    p.add_argument("--collect", required=True, metavar="RUN_DIR", help="the run folder (results/<run-name>)")
    return p.parse_args(argv).collect


def main(argv=None):
    from src.matrix import collect_matrix, print_summary, run_matrix
    from src.matrix.pairs import run_pairs

    args = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--collect" or a.startswith("--collect=") for a in args):
        path, summary = collect_matrix(parse_collect(args), script_argv(__file__, argv))
    else:
        mjob = parse_args(argv)
        if mjob.pairs is not None:
            path, table = run_pairs(mjob, *mjob.pairs, script_argv(__file__, argv))
            if path is not None:
                print(table.round(4).to_string(index=False))
                print(f"wrote {path}, pairs.csv and pairs.png beside it, and one run folder per pair")
            return
        path, summary = run_matrix(mjob, script_argv(__file__, argv))
        if path is None:
            if mjob.shard is not None:
                print(f"shard {mjob.shard[0]}/{mjob.shard[1]} done; when every shard is, run "
                      f"stitch_matrix.py --collect RUN_DIR to write the tables")
            return
    print_summary(summary)
    print(f"wrote {path} and the tables, matrix.png and cells/ beside it")


if __name__ == "__main__":
    sys.exit(run_main(main))
