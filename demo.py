#!/usr/bin/env python
"""Demo: two networks from different seeds, their layers, a stitch between them and one results table.

Uses the committed Fashion-MNIST models in model_weights/ (or trains two with --train).
Example:  python demo.py            # Tiny10 at bn3
          python demo.py --model lenet --train
"""
import argparse
import sys

from src.cli import run_main
from src.validation import int_option


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny10", "lenet"], default="tiny10", help="default tiny10")
    p.add_argument("--epochs", type=int_option("--epochs"), default=3, help="stitch training epochs; default 3")
    p.add_argument("--train", action="store_true", help="train the two networks instead of using the committed ones")
    p.add_argument("--train-epochs", type=int_option("--train-epochs"), default=3, help="epochs per network with --train; default 3")
    return p.parse_args(argv)


def main(argv=None):
    from src.demo import run_demo

    args = parse_args(argv)
    run_demo(args.model, args.epochs, args.train, args.train_epochs)


if __name__ == "__main__":
    sys.exit(run_main(main))
