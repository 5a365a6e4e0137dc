#!/usr/bin/env python
"""List the layers one can stitch at or compare: every layer in forward order, its output shape and parameters.

Examples:  python layer_info.py tiny10 -d fashion
           python layer_info.py model_weights/Tiny10/FashionMNIST/in0-gn0/<iteration>.pt
           python layer_info.py --list
Containers (e.g. a ResNet block 'layer1.0') are valid layer names too; the table lists the leaves.
"""
import argparse
import sys
from pathlib import Path

from src.cli import run_main
from src.data.options import add_image_options
from src.data import DATASET_HELP, check_dataset_name
from src.validation import check_writable_dir


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a zoo model name (e.g. tiny10, resnet20_w2), a checkpoint path or a "
                                                 "model spec (torchvision:NAME, timm:NAME[?k=v,...], MODULE:FUNCTION)")
    parser.add_argument("--weights", default=None, metavar="FILE", help="the weights file of a model spec")
    parser.add_argument("-d", "--dataset", type=check_dataset_name, default=None,
                        help=f"input size and channels of this dataset ({DATASET_HELP}); default the checkpoint's, "
                             f"or cifar10 for a name")
    parser.add_argument("-m", "--model-name", default=None, help="model name of a bare state_dict checkpoint")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    parser.add_argument("--list", action="store_true", help="list the zoo's model names and exit")
    add_image_options(parser, "dataset")
    args = parser.parse_args(argv)
    if not args.list and not args.model:
        parser.error("give a model name or checkpoint path, or --list")
    return args


def main(argv=None):
    from src.models import list_models
    from src.models.describe import describe_layers
    from src.results_io import refuse_overwrite, write_csv

    args = parse_args(argv)
    if args.csv:
        refuse_overwrite(args.csv, args.overwrite, instead="choose another file name")
        check_writable_dir(Path(args.csv).parent, "--csv file")
    if args.list:
        print("\n".join(list_models()))
        return
    title, table = describe_layers(args.model, args.dataset, args.model_name, args.weights)
    print(title)
    print(table.to_string())
    print(f"total parameters: {int(table['params'].sum()):,}")
    if args.csv:
        print(f"wrote {write_csv(args.csv, table, index=True)}")


if __name__ == "__main__":
    sys.exit(run_main(main))
