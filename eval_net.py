#!/usr/bin/env python
"""Loss and accuracy of a trained network on the test (or validation) split.

Example:  python eval_net.py model_weights/Tiny10/FashionMNIST/in0-gn0/<iteration>.pt --json
"""
import argparse
import json
import sys

from src.cli import run_main
from src.data.options import add_image_options
from src.data import DATASET_HELP, check_dataset_name
from src.validation import int_option


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .pt written by train_model.py (or a bare state_dict with -m and -d), or a "
                                           "model spec (torchvision:NAME, timm:NAME, MODULE:FUNCTION) with --weights and -d")
    parser.add_argument("--weights", default=None, metavar="FILE", help="the weights file of a model spec")
    parser.add_argument("-d", "--dataset", type=check_dataset_name, default=None,
                        help=f"dataset to evaluate on: {DATASET_HELP}; default the one in the checkpoint")
    parser.add_argument("--split", choices=["test", "val"], default="test", help="default test")
    parser.add_argument("-m", "--model", default=None, help="model name, needed only for a bare state_dict")
    parser.add_argument("-b", "--batch-size", type=int_option("-b/--batch-size"), default=1000)
    parser.add_argument("--max-samples", type=int_option("--max-samples"), default=None,
                        help="evaluate on the first N samples only")
    parser.add_argument("--val-size", type=int_option("--val-size", 0), default=None,
                        help="size of the 'val' split; default the one the checkpoint was trained with (else 5000, for "
                             "an imagefolder:DIR 5000 or a tenth of its training images, whichever is smaller)")
    parser.add_argument("--download", action="store_true", help="download the dataset with torchvision if it is missing")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N; default DEVICE of the config")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_image_options(parser, "dataset")
    return parser.parse_args(argv)


def main(argv=None):
    from src.training.eval_checkpoint import evaluate_checkpoint

    args = parse_args(argv)
    result = evaluate_checkpoint(args.checkpoint, args.dataset, args.split, args.batch_size, args.model,
                                 args.device, args.max_samples, val_size=args.val_size, download=args.download,
                                 weights=args.weights)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        split = f"val split of {result['val_size']}" if result["split"] == "val" else f"{result['split']} split"
        print(f"{result['model']} on {result['dataset']} ({split}, {result['n']} samples): "
              f"loss {result['loss']:.4f}, accuracy {result['acc']:.4f}")


if __name__ == "__main__":
    sys.exit(run_main(main))
