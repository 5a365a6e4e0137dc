"""The command-line options of one stitch, shared by ``stitch_nets.py`` (one pair of layers) and
``stitch_matrix.py`` (every front layer into every end layer): one definition, two scripts.

The defaults are :class:`~src.stitching.job.StitchJob`'s (the reference's).
"""
import argparse

from src.data.options import VAL_SIZE_HELP, add_image_options
from src.data import DATASET_HELP, check_dataset_name
from src.stitching.inits import INITS, MASKS
from src.stitching.job import PRESETS, SCHEDULES, TRAINING_DEFAULTS as T, StitchJob as D
from src.stitching.losses import TARGET_TYPES
from src.stitching.objectives import MATRIX_OBJECTIVES, OBJECTIVES


def add_stitch_options(p: argparse.ArgumentParser, matrix: bool = False) -> argparse.ArgumentParser:
    """Add every option of a stitch (not the checkpoints and layers) to ``p``.

    ``matrix=True`` leaves out what a stitch matrix decides itself: it always trains on cached
    front activations of the unaugmented training split (``--cache-front``, ``--no-augment``).
    """
    p.add_argument("-d", "--dataset", type=check_dataset_name, default=None,
                   help=f"dataset: {DATASET_HELP}; default the one the end model was trained on")
    add_image_options(p, "dataset")  # --image-size, --mean, --std: set in the -d name once parsed
    # Training options default to None ("not given"): StitchJob fills them from --preset, else TRAINING_DEFAULTS.
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="a named training set-up; explicit flags override it. hernandez: SGD momentum 0.9, batch 256, "
                        "weight decay 0.01, lr 0.01, 4 epochs, 1 warm-up epoch then cosine")
    p.add_argument("-e", "--epochs", type=int, default=None, help=f"default {T['epochs']}")
    p.add_argument("-b", "--batch-size", type=int, default=None, help=f"default {T['batch_size']}")
    p.add_argument("-lr", "--lr", type=float, default=None, help=f"default {T['lr']:g}")
    p.add_argument("-wd", "--weight-decay", type=float, default=None, help=f"default {T['weight_decay']:g}")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=None, help=f"default {T['optimizer']}")
    p.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="learning-rate schedule: step (x0.1 at 1/3 and 2/3 of the epochs) or cosine (per iteration, "
                        f"to zero, after --warmup-epochs of linear warm-up); default {T['schedule']}")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="epochs of linear warm-up before the cosine schedule (shorter than training); default 0")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of the stitch's init, batch order and augmentation; default 0")
    p.add_argument("-s", "--save-frequency", type=int, default=D.save_frequency,
                   help="record the stitch every this many x epochs iterations; default 10")
    p.add_argument("--run-name", default=None, help="subfolder of the output folder; default the current date and time")
    p.add_argument("-o", "--out-dir", default=None, help="output folder; default RESULTS_DIR of the config (results/)")
    p.add_argument("--l1", type=float, default=D.l1, help="weight of the L1 penalty mean(|W|); default 0")
    p.add_argument("--cka-reg", type=float, default=D.cka_reg,
                   help="add this times CKA(end layer, stitch output) to the loss (>0 penalises similarity); default 0")
    p.add_argument("-r", "--low-rank", type=int, default=None, help="rank of the stitch weight; default full rank")
    p.add_argument("--temperature", type=float, default=D.temperature, help="temperature of soft targets; default 1")
    p.add_argument("-f", "--flatten", action="store_true", help="map the whole flattened tensors (pixel to pixel)")
    p.add_argument("--pool", action="store_true",
                   help="a feature map into a vector layer: global average pooling + linear (default flatten + linear)")
    p.add_argument("-i", "--init", choices=INITS, default=D.init, help="initial stitch; default random")
    p.add_argument("-m", "--mask", choices=MASKS, default=D.mask, help="mask on the stitch weight; default identity")
    p.add_argument("--target-type", choices=TARGET_TYPES, default=D.target_type, help="training target; default hard")
    p.add_argument("--objective", choices=MATRIX_OBJECTIVES if matrix else OBJECTIVES, default=D.objective,
                   help="task: train the stitch on the task loss (vanilla); mse: on the mean squared error to the "
                        "end network's own activation at the end layer (similarity stitch; task accuracy still measured)"
                        + ("; both: one of each per cell, from the same init, with the EV/ES/SV statistics"
                           if matrix else "") + "; default task")
    if not matrix:
        p.add_argument("--no-augment", action="store_true", help="train the stitch on unaugmented training data")
        p.add_argument("--cache-front", action="store_true",
                       help="compute the frozen front network's activations once and reuse them every epoch (implies --no-augment)")
    p.add_argument("--fold-bn", action="store_true",
                   help="fold the frozen networks' BatchNorms into the preceding layers (faster; logits equal up to rounding)")
    p.add_argument("--cache-limit-gb", type=float, default=D.cache_limit_gb, help="refuse to cache more than this; default 8")
    p.add_argument("--measure-samples", type=int, default=D.measure_samples,
                   help="test samples for the CKA / MSE measurements; default 2000")
    p.add_argument("--val-size", type=int, default=D.val_size, help=VAL_SIZE_HELP)
    p.add_argument("--max-samples", type=int, default=None, help="use only the first N samples of each split (quick runs)")
    p.add_argument("--front-weights", default=None, metavar="FILE",
                   help="weights file of a front network given as a model spec (a state_dict, or a dict holding one "
                        "under state_dict / model / ...); without it the spec is randomly initialised from --seed")
    p.add_argument("--end-weights", default=None, metavar="FILE", help="weights file of an end network given as a spec")
    p.add_argument("--front-arch", default=None, help="model name of a bare state_dict front checkpoint")
    p.add_argument("--end-arch", default=None, help="model name of a bare state_dict end checkpoint")
    p.add_argument("--download", action="store_true", help="download the dataset with torchvision if it is missing")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N; default DEVICE of the config")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result of the same run and layers")
    return p
