#!/usr/bin/env python
"""Train a zoo model on a dataset; writes <out>/<Model>/<Dataset>/in<i>-gn<g>/<iteration>.pt and training_log.csv.

Example:  python train_model.py -m tiny10 -d fashion -e 15 -i 0 -g 0
Own images:  python train_model.py -m tiny10 -d imagefolder:my_images -e 30   (my_images/{train,test}/<class>/*.png)
Several GPUs:  torchrun --nproc_per_node=4 train_model.py -m resnet34 -d cifar10 -b 128 (-b is the global batch)
An existing run folder is refused: --resume continues a killed run from its last checkpoint (same
options, same final weights), --overwrite deletes its checkpoints and trains again.
"""
import argparse
import sys

from src.cli import run_main, script_argv
from src.data.options import VAL_SIZE_HELP, add_image_options
from src.data import DATASET_HELP, check_dataset_name
from src.training.run import TrainJob as D
from src.training.run import train_from_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default=D.model, help="zoo model name (see layer_info.py --list); default tiny10")
    parser.add_argument("-d", "--dataset", default=D.dataset, type=check_dataset_name,
                        help=f"dataset: {DATASET_HELP}; default cifar10")
    parser.add_argument("-i", "--init-noise", type=int, default=D.init_noise, help="seed of the initial weights; default 0")
    parser.add_argument("-g", "--gradient-noise", type=int, default=D.gradient_noise, help="seed of batch order and augmentation; default 0")
    parser.add_argument("-o", "--out-dir", default=None, help="output root; default SNAPSHOTS_DIR of the config (snapshots/)")
    parser.add_argument("-e", "--epochs", type=int, default=D.epochs, help="default 300")
    parser.add_argument("-b", "--batch-size", type=int, default=D.batch_size, help="default 128")
    parser.add_argument("-lr", "--lr", type=float, default=D.lr,
                        help="initial learning rate, multiplied by 0.1 after 1/3 and 2/3 of the epochs; default 0.1")
    parser.add_argument("-wd", "--weight-decay", type=float, default=D.weight_decay, help="default 1e-4")
    parser.add_argument("-opt", "--optimizer", choices=["sgd", "adam"], default=D.optimizer,
                        help="sgd (Nesterov momentum 0.9) or adam; default sgd")
    parser.add_argument("-s", "--save-frequency", type=int, default=D.save_frequency,
                        help="save a checkpoint every this many iterations (iteration 0 and the last are always saved); default 10000")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the checkpoints, log and resume state of an existing run folder and train again")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the folder from its last checkpoint (give the same options)")
    parser.add_argument("--val-size", type=int, default=D.val_size, help=VAL_SIZE_HELP)
    parser.add_argument("--max-samples", type=int, default=None, help="use only this many training samples (quick runs)")
    parser.add_argument("--no-augment", action="store_true", help="train without data augmentation")
    parser.add_argument("--download", action="store_true", help="download the dataset with torchvision if it is missing")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N; default DEVICE of the config (auto); "
                        "under torchrun each process uses cuda:LOCAL_RANK (or the CPU)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun on GPUs: BatchNorm statistics over the whole global batch (SyncBatchNorm) "
                             "instead of each process's slice")
    add_image_options(parser, "dataset")
    return D(**vars(parser.parse_args(argv)))


def main(argv=None):
    args = parse_args(argv)
    run_dir = train_from_args(args, script_argv(__file__, argv))
    print(f"done: checkpoints and training_log.csv in {run_dir}")


if __name__ == "__main__":
    sys.exit(run_main(main))
