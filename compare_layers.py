#!/usr/bin/env python
"""Layer x layer similarity matrix of two trained networks (CKA by default), as CSV, NPZ, pickle and heatmap.

Examples:
  python compare_layers.py a.pt b.pt -d fashion --layers1 're:relu\\d|fc' --layers2 're:relu\\d|fc'
  python compare_layers.py a.pt b.pt -d fashion --measure cka --samples 2000 --permutations 200 --bootstrap 200
  python compare_layers.py a.pt a.pt -d mnist --dataset2 fashion     # one model, two datasets
Layers are exact names, globs ('layer1.*') or regular expressions ('re:relu\\d'); default every leaf layer.
cka_minibatch streams over batches of -b samples (the minibatches of the estimator); cka and cka_debiased
use all samples at once (N x N Gram matrices: limit N with --samples); other measures run pair by pair.
Output (default RESULTS_DIR/compare/<Family>-<ckpt1>_vs_<Family>-<ckpt2>_<measure>_<dataset>_layers-<patterns>):
matrix.csv (rows: layers of model 1, columns: layers of model 2), matrix.npz, matrix.pkl, heatmap.png
(+ pvalues.csv, ci_*.csv). --overwrite replaces all of a previous run's files in the folder.
Layer pairs on which the measure is degenerate (a constant layer; cca, svcca, pwcca or lr with more
features than samples, ...) are NaN, named in a warning line and listed with the reason in degenerate.csv
(svcca with a smaller --keep, or more --samples, avoid it).
"""
import argparse
import sys
import warnings

from src.cli import run_main
from src.data.options import VAL_SIZE_HELP, add_image_options
from src.data import DATASET_HELP, check_dataset_name
from src.errors import UserError
from src.similarity._prep import DegenerateWarning
from src.similarity.registry import check_minibatch_size, check_sample_count
from src.validation import float_option, int_option


def parse_args(argv=None):
    from src.similarity import FLOAT_MEASURES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model1", help="the first network: a checkpoint (.pt), or a model spec: torchvision:NAME, timm:NAME[?k=v,...] or MODULE:FUNCTION")
    parser.add_argument("model2", nargs="?", default=None, help="the second network, as model1; default model1")
    parser.add_argument("-d", "--dataset", type=check_dataset_name, default=None,
                        help=f"data set (seen by both models): {DATASET_HELP}; default the one model1 was trained on")
    parser.add_argument("--dataset2", type=check_dataset_name, default=None,
                        help="data set seen by model 2 instead (compare representations of two data sets)")
    parser.add_argument("--split", choices=["test", "val", "train"], default="test", help="default test")
    parser.add_argument("--layers1", nargs="+", default=None, metavar="PATTERN",
                        help="layers of model 1: names, globs or re:REGEX; default every leaf layer")
    parser.add_argument("--layers2", nargs="+", default=None, metavar="PATTERN", help="layers of model 2 (likewise)")
    parser.add_argument("--measure", choices=FLOAT_MEASURES, default="cka_minibatch", help="default cka_minibatch")
    parser.add_argument("--samples", type=int_option("--samples"), default=None, help="use the first N samples; default the whole split")
    parser.add_argument("-b", "--batch-size", type=int_option("-b/--batch-size"), default=256,
                        help="batch size (= the minibatch of cka_minibatch); default 256")
    parser.add_argument("--permutations", type=int_option("--permutations", 0), default=0, metavar="K",
                        help="permutation test with K permutations: p-values for every pair (CKA measures)")
    parser.add_argument("--bootstrap", type=int_option("--bootstrap", 0), default=0, metavar="K",
                        help="percentile bootstrap interval from K resamples (cka_minibatch: batches; cka: samples)")
    parser.add_argument("--ci", type=float_option("--ci", above=0, below=1), default=0.95, help="level of the bootstrap interval; default 0.95")
    parser.add_argument("--seed", type=int_option("--seed", 0), default=0, help="seed of the permutations and resamples; default 0")
    parser.add_argument("--precision", choices=["float32", "float64"], default="float32",
                        help="precision of the Gram matrices (sums are always float64); default float32")
    parser.add_argument("--keep", type=float_option("--keep", above=0), default=None, metavar="FRACTION",
                        help="svcca only: fraction of each side's variance kept (0 < FRACTION <= 1); default 0.99")
    parser.add_argument("-o", "--out-dir", default=None, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an existing output folder")
    parser.add_argument("-m1", "--arch1", default=None, help="model name of model1, needed only for a bare state_dict")
    parser.add_argument("-m2", "--arch2", default=None, help="model name of model2, needed only for a bare state_dict")
    parser.add_argument("--weights1", default=None, metavar="FILE", help="weights of model1 when it is a model spec")
    parser.add_argument("--weights2", default=None, metavar="FILE",
                        help="weights of model2 when it is a model spec; default --weights1 when model2 is model1's")
    parser.add_argument("--val-size", type=int_option("--val-size", 0), default=None, help=VAL_SIZE_HELP)
    parser.add_argument("--download", action="store_true", help="download the dataset with torchvision if it is missing")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N; default DEVICE of the config")
    add_image_options(parser, "dataset", "dataset2")
    args = parser.parse_args(argv)
    check_minibatch_size(args.measure, args.batch_size)
    if args.keep is not None and (args.measure != "svcca" or args.keep > 1):
        raise UserError(f"--keep must be a finite number > 0 and <= 1, got {args.keep:g}" if args.keep > 1 else
                        "--keep is the fraction of variance svcca keeps; use it with --measure svcca")
    if args.samples is not None:  # the same minimum as compare_nets.py and the measure functions
        check_sample_count(args.measure, args.samples, "--samples")
    if args.model2 is None:  # one network against itself (two data sets, or its own layers)
        args.model2, args.weights2 = args.model1, args.weights2 or args.weights1
    args.progress = sys.stderr.isatty()
    return args


def main(argv=None):
    from src.cli import script_argv
    from src.compare.layerwise import compare_layers

    args = parse_args(argv)
    with warnings.catch_warnings():  # reported below as one "warning:" line
        warnings.simplefilter("ignore", DegenerateWarning)
        sim, paths = compare_layers(args, script_argv(__file__, argv))
    print(sim.title())
    print(sim.to_frame().round(4).to_string())
    if sim.pvalues is not None:
        print(f"permutation p-values ({sim.permutations} permutations; smallest possible {1 / (sim.permutations + 1):.4f}):")
        print(sim.to_frame("pvalues").round(4).to_string())
    if sim.ci_low is not None:
        print(f"{100 * sim.ci_level:g}% bootstrap interval ({sim.bootstrap} resamples of "
              f"{sim.meta.get('bootstrap_unit')}): see ci_low.csv / ci_high.csv")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if sim.degenerate:
        print(f"warning: {sim.degenerate_warning()}; every reason is in {paths['degenerate']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_main(main))
