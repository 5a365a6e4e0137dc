#!/usr/bin/env python
"""Write a small generated image folder (ImageFolder layout) to try the toolkit on "your own" data.

Example:  python example_data.py data/example && python layer_info.py torchvision:resnet18 -d imagefolder:data/example
"""
import argparse
import sys

from src.cli import run_main
from src.validation import int_option


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a new or empty folder to write train/ and test/ into")
    p.add_argument("--classes", type=int_option("--classes", 2), default=3, help="default 3")
    p.add_argument("--train", type=int_option("--train"), default=60, help="training images per class; default 60")
    p.add_argument("--test", type=int_option("--test"), default=20, help="test images per class; default 20")
    p.add_argument("--size", type=int_option("--size"), default=32, help="image side in pixels; default 32")
    p.add_argument("--seed", type=int_option("--seed", 0), default=0, help="default 0")
    return p.parse_args(argv)


def main(argv=None):
    from src.data.example_folder import write_example_folder

    args = parse_args(argv)
    root = write_example_folder(args.folder, args.classes, args.train, args.test, args.size, args.seed)
    print(f"wrote {root}/train and {root}/test ({args.classes} classes); use it as -d imagefolder:{root}")


if __name__ == "__main__":
    sys.exit(run_main(main))
