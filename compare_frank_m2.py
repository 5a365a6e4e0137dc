#!/usr/bin/env python
"""Compare a stitch's output with the end network's own activation at the end layer.

Stitch: before, after or ps_inv.  Measures: names of src.similarity.MEASURES (cka, cka_debiased,
cca, svcca, pwcca, procrustes, lr, l2, corr, ps_inv, ...).
Example:  python compare_frank_m2.py results/demo/bn3-bn3.pkl after cka l2 procrustes
A measure that is degenerate on the data (too few samples; cca, svcca, pwcca or lr with more features
than samples; a constant layer) is refused with one error line saying why and what to do.
"""
import argparse
import json
import sys

from src.cli import run_main
from src.stitching.rebuild import WEIGHTS
from src.validation import int_option


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pickle", help="result pickle written by stitch_nets.py")
    p.add_argument("weights", choices=WEIGHTS,
                   help="which saved stitch: before (initial), after (trained) or ps_inv (least squares)")
    p.add_argument("measures", nargs="+", help="similarity measures (names of src.similarity.MEASURES, or all)")
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="default test")
    p.add_argument("-b", "--batch-size", type=int_option("-b/--batch-size"), default=500)
    p.add_argument("--max-samples", type=int_option("--max-samples"), default=2000, help="samples to compare on; default 2000")
    p.add_argument("--front-model", default=None,
                   help="front checkpoint (or model spec), if it moved since the run or was a module from Python")
    p.add_argument("--end-model", default=None, help="end checkpoint (or model spec), as --front-model")
    p.add_argument("--front-weights", default=None, help="weights file of a front model spec, if it moved since the run")
    p.add_argument("--end-weights", default=None, help="weights file of an end model spec, if it moved since the run")
    p.add_argument("--allow-changed-models", action="store_true",
                   help="use the checkpoints even if they are not the files the stitch was trained with (SHA-256)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N; default DEVICE of the config")
    p.add_argument("--json", action="store_true", help="print the result as JSON (arrays as lists)")
    return p.parse_args(argv)


def main(argv=None):
    from src.compare.nets import SAMPLES_OPTION, check_samples, table
    from src.similarity import DegenerateMeasure
    from src.similarity.registry import measure_names
    from src.provenance import jsonable
    from src.stitching.evaluate_result import compare_stitch_to_end

    args = parse_args(argv)
    check_samples(measure_names(args.measures), args.max_samples)  # before the models are loaded
    try:
        r = compare_stitch_to_end(args.pickle, args.weights, args.measures, args.split, args.batch_size, args.max_samples,
                                  args.device, args.front_model, args.end_model, args.allow_changed_models,
                                  front_weights=args.front_weights, end_weights=args.end_weights)
    except DegenerateMeasure as err:
        raise err.with_option(SAMPLES_OPTION) from None
    if args.json:
        print(json.dumps(jsonable(r), indent=2))
        return
    print(f"{r['weights']} stitch output vs end layer on {r['dataset']} ({r['split']} split, {r['n']} samples)")
    print(table(r).to_string())


if __name__ == "__main__":
    sys.exit(run_main(main))
