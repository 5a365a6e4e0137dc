#!/usr/bin/env python
"""Stitch two trained networks: front network up to FRONT_LAYER, a trained linear stitch, end network after END_LAYER.

Writes results/<run-name>/<front_layer>-<end_layer>.pkl (load it with src.stitching.results.load_result)
and a one-row CSV summary beside it.

Example:
  python stitch_nets.py model_weights/Tiny10/FashionMNIST/in0-gn0/<it>.pt \\
      model_weights/Tiny10/FashionMNIST/in1-gn1/<it>.pt bn3 bn3 -d fashion -i ps_inv --run-name demo

Inits (-i): random, perm (random permutation), eye (identity), ps_inv (least squares on the training
split), ones-zeros.  Masks (-m): identity, semi-match, abs-semi-match, random-permutation.
Target types: hard (labels), soft_1 / soft_2 (front / end network outputs), soft_12 (both),
soft_1_plus_2 (their mean logits).  --cka-reg C adds C * CKA(end layer, stitch output) to the loss:
C > 0 penalises similarity, C < 0 rewards it.
"""
import argparse
import sys

from src.cli import run_main, script_argv
from src.stitching.job import StitchJob as D
from src.stitching.options import add_stitch_options


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("front_model", help="the front network: a checkpoint, or a model spec (torchvision:NAME, "
                                       "timm:NAME[?k=v,...], MODULE:FUNCTION) with --front-weights")
    p.add_argument("end_model", help="the end network, as front_model (with --end-weights)")
    p.add_argument("front_layer", help="last layer of the front network (see layer_info.py)")
    p.add_argument("end_layer", help="layer of the end network whose output the stitch replaces")
    add_stitch_options(p)
    return D(**vars(p.parse_args(argv)))


def main(argv=None):
    from src.stitching.results import load_result
    from src.stitching.run import stitch_from_args

    args = parse_args(argv)
    path = stitch_from_args(args, script_argv(__file__, argv))
    result = load_result(path)
    s = result["summary"]
    print(f"end model acc {s['end_acc']:.4f} | least squares {s['ps_inv_acc']:.4f} | trained stitch {s['trans_acc']:.4f} "
          f"| relative {s['rel_acc']:.4f} | CKA front/end {s['cka']:.4f} -> stitch/end {s['cka_frank']:.4f}")
    print(f"wrote {path} and {path.with_suffix('.csv')}")


if __name__ == "__main__":
    sys.exit(run_main(main))
