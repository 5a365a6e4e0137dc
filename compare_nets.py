#!/usr/bin/env python
"""Similarity measures between one layer of each of two trained networks, on the test split by default.

Example:  python compare_nets.py a.pt b.pt relu4 relu4 fashion cka cka_debiased cca procrustes
          python compare_nets.py a.pt b.pt bn3 bn3 fashion all --max-samples 2000 --json out.json
MEASURE is a name of the similarity registry (cka, cka_debiased, cka_rbf, cka_minibatch, dcka, cca,
cca_mean_rho, svcca, pwcca, procrustes, lr, l2, corr, ps_inv, ls_orth, ls_sum) or 'all'. Measures that
return matrices or weights are summarised in the table and stored in full (as lists) in the JSON.
A measure that is degenerate on the data is refused, not printed: fewer samples than it needs, a constant
layer, or cca, cca_mean_rho, pwcca, svcca (its kept directions) or lr with more features than samples
(canonical correlations or R^2 of 1 whatever the data). Use more samples (--max-samples), a pooled layer,
or svcca with a smaller --keep.
"""
import argparse
import json
import sys
from pathlib import Path

from src.cli import run_main
from src.data.options import VAL_SIZE_HELP, add_image_options
from src.data import DATASET_HELP, check_dataset_name
from src.errors import UserError
from src.validation import check_writable_dir, float_option, int_option


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model1", help="the first network: a checkpoint (.pt), or a model spec: torchvision:NAME, timm:NAME[?k=v,...] or MODULE:FUNCTION")
    parser.add_argument("model2", help="the second network, as model1")
    parser.add_argument("layer1", help="layer of the first network (see layer_info.py)")
    parser.add_argument("layer2", help="layer of the second network")
    parser.add_argument("dataset", type=check_dataset_name, help=f"data the activations are taken on: {DATASET_HELP}")
    parser.add_argument("measures", nargs="+", metavar="MEASURE", help="similarity measure(s), or 'all'")
    parser.add_argument("--split", choices=["test", "val", "train"], default="test", help="default test")
    parser.add_argument("-b", "--batch-size", type=int_option("-b/--batch-size"), default=500, help="forward-pass batch size; default 500")
    parser.add_argument("--max-samples", type=int_option("--max-samples"), default=None, help="use the first N samples of the split")
    parser.add_argument("--val-size", type=int_option("--val-size", 0), default=None, help=VAL_SIZE_HELP)
    parser.add_argument("--keep", type=float_option("--keep", above=0), default=None, metavar="FRACTION",
                        help="fraction of each side's variance svcca keeps (0 < FRACTION <= 1); default 0.99. "
                             "Fewer kept directions keep svcca from being degenerate on wide layers")
    parser.add_argument("-m1", "--arch1", default=None, help="model name of model1, needed only for a bare state_dict")
    parser.add_argument("-m2", "--arch2", default=None, help="model name of model2, needed only for a bare state_dict")
    parser.add_argument("--weights1", default=None, metavar="FILE", help="weights of model1 when it is a model spec")
    parser.add_argument("--weights2", default=None, metavar="FILE", help="weights of model2 when it is a model spec")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="also write the results as JSON to PATH (or to stdout with no PATH, instead of the table)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--download", action="store_true", help="download the dataset with torchvision if it is missing")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N; default DEVICE of the config")
    add_image_options(parser, "dataset")
    args = parser.parse_args(argv)
    check_keep(args.keep)
    return args


def check_keep(keep) -> None:
    """svcca's ``keep`` is a fraction of the variance: in (0, 1]."""
    if keep is not None and keep > 1:
        raise UserError(f"--keep must be a finite number > 0 and <= 1 (a fraction of the variance), got {keep:g}")


def main(argv=None):
    from src.cli import script_argv
    from src.data.options import dataset_provenance
    from src.compare.nets import compare_nets, table
    from src.provenance import jsonable
    from src.provenance import provenance
    from src.results_io import refuse_overwrite, write_json

    args = parse_args(argv)
    if args.json and args.json != "-":
        refuse_overwrite(args.json, args.overwrite, instead="choose another file name")
        check_writable_dir(Path(args.json).parent, "--json file")
    result = compare_nets(args.model1, args.model2, args.layer1, args.layer2, args.dataset, args.measures,
                          split=args.split, batch_size=args.batch_size, max_samples=args.max_samples,
                          arch1=args.arch1, arch2=args.arch2, device=args.device, download=args.download,
                          val_size=args.val_size, keep=args.keep, weights1=args.weights1, weights2=args.weights2)
    document = dict(jsonable(result), **dataset_provenance(args.dataset),
                    provenance=provenance(args, script_argv(__file__, argv)))
    if args.json == "-":
        print(json.dumps(document, indent=2))
        return
    print(f"{result['model1']} {result['layer1']} ({'x'.join(map(str, result['shape1']))}) vs "
          f"{result['model2']} {result['layer2']} ({'x'.join(map(str, result['shape2']))}) "
          f"on {result['dataset']} ({result['split']} split, {result['n']} samples)")
    print(table(result).to_string())
    if args.json:
        print(f"wrote {write_json(args.json, document)}")


if __name__ == "__main__":
    sys.exit(run_main(main))
