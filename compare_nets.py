#!/usr/bin/env python
"""Similarity measures between one layer of each of two trained networks, on the test split by default.

Example:  python compare_nets.py a.pt b.pt relu4 relu4 fashion cka cka_debiased cca procrustes
          python compare_nets.py a.pt b.pt bn3 bn3 fashion all --max-samples 2000 --json out.json
MEASURE is a name of the similarity registry (cka, cka_debiased, cka_rbf, cka_minibatch, dcka, cca,
cca_mean_rho, svcca, pwcca, procrustes, lr, l2, corr, ps_inv, ls_orth, ls_sum) or 'all'. Measures that
return matrices or weights are summarised in the table and stored in full (as lists) in the JSON.
"""
import argparse
import json
import sys
from pathlib import Path

from src.cli import VAL_SIZE_HELP, add_image_options, run_main
from src.data import DATASET_HELP, check_dataset_name
from src.validation import check_writable_dir, int_option


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model1", help="checkpoint of the first network (.pt)")
    parser.add_argument("model2", help="checkpoint of the second network (.pt)")
    parser.add_argument("layer1", help="layer of the first network (see layer_info.py)")
    parser.add_argument("layer2", help="layer of the second network")
    parser.add_argument("dataset", type=check_dataset_name, help=f"data the activations are taken on: {DATASET_HELP}")
    parser.add_argument("measures", nargs="+", metavar="MEASURE", help="similarity measure(s), or 'all'")
    parser.add_argument("--split", choices=["test", "val", "train"], default="test", help="default test")
    parser.add_argument("-b", "--batch-size", type=int_option("-b/--batch-size"), default=500, help="forward-pass batch size; default 500")
    parser.add_argument("--max-samples", type=int_option("--max-samples"), default=None, help="use the first N samples of the split")
    parser.add_argument("--val-size", type=int_option("--val-size", 0), default=None, help=VAL_SIZE_HELP)
    parser.add_argument("-m1", "--arch1", default=None, help="model name of model1, needed only for a bare state_dict")
    parser.add_argument("-m2", "--arch2", default=None, help="model name of model2, needed only for a bare state_dict")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="also write the results as JSON to PATH (or to stdout with no PATH, instead of the table)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--download", action="store_true", help="download the dataset with torchvision if it is missing")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N; default DEVICE of the config")
    add_image_options(parser, "dataset")
    return parser.parse_args(argv)


def main(argv=None):
    from src.cli import dataset_provenance, script_argv
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
                          val_size=args.val_size)
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
