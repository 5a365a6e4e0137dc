#!/usr/bin/env python
"""Evaluate a stitched network rebuilt from a stitch_nets.py result pickle.

Stitch: before (initial state), after (trained) or ps_inv (least-squares stitch).
Example:  python eval_stitch.py results/demo/bn3-bn3.pkl after
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
    p.add_argument("--split", choices=["test", "val"], default="test", help="default test")
    p.add_argument("-b", "--batch-size", type=int_option("-b/--batch-size"), default=1000)
    p.add_argument("--max-samples", type=int_option("--max-samples"), default=None, help="evaluate on the first N samples only")
    p.add_argument("--front-model", default=None,
                   help="front checkpoint (or model spec), if it moved since the run or was a module from Python")
    p.add_argument("--end-model", default=None, help="end checkpoint (or model spec), as --front-model")
    p.add_argument("--front-weights", default=None, help="weights file of a front model spec, if it moved since the run")
    p.add_argument("--end-weights", default=None, help="weights file of an end model spec, if it moved since the run")
    p.add_argument("--allow-changed-models", action="store_true",
                   help="use the checkpoints even if they are not the files the stitch was trained with (SHA-256)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N; default DEVICE of the config")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args(argv)


def main(argv=None):
    from src.stitching.evaluate_result import evaluate_stitch

    args = parse_args(argv)
    r = evaluate_stitch(args.pickle, args.weights, args.split, args.batch_size, args.max_samples, args.device,
                        args.front_model, args.end_model, args.allow_changed_models,
                        front_weights=args.front_weights, end_weights=args.end_weights)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{r['weights']} stitch on {r['dataset']} ({r['split']} split, {r['n']} samples): loss {r['loss']:.4f}, "
              f"accuracy {r['acc']:.4f}, end model {r['end_acc']:.4f}, relative {r['rel_acc']:.4f}, "
              f"same prediction as the end model {r['same_class_out']:.4f}")


if __name__ == "__main__":
    sys.exit(run_main(main))
