"""The table of supported datasets: names, shapes, class counts and normalisation constants.

Besides the built-in names of :data:`DATASET_NAMES`, every function here takes ``imagefolder:DIR``
(a folder of the user's own images, with options: see :mod:`src.data.imagefolder`).
"""
from typing import Any, Dict, Tuple

from src.data.imagefolder import (check_imagefolder_name, imagefolder_info, is_imagefolder_name,
                                   load_imagefolder)
from src.data.info import DatasetInfo
from src.errors import UserError


# Per-channel (mean, std) of the images scaled to [0, 1]. The reference's constants, except that
# Fashion-MNIST gets its own (the reference reused MNIST's, which leaves Fashion batches at mean
# 0.5 and std 1.15 instead of about 0 and 1). CelebA is not in this table:
# its transform is ``x * 255 - 117`` (see src.data.celeba).
NORMALIZATION: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}

_INFOS = (
    DatasetInfo("mnist", "MNIST", 10, 1, (32, 32), normalization=NORMALIZATION["mnist"]),
    DatasetInfo("fashion", "FashionMNIST", 10, 1, (32, 32), normalization=NORMALIZATION["fashion"]),
    DatasetInfo("cifar10", "CIFAR10", 10, 3, (32, 32), normalization=NORMALIZATION["cifar10"]),
    DatasetInfo("cifar100", "CIFAR100", 100, 3, (32, 32), normalization=NORMALIZATION["cifar100"]),
    DatasetInfo("celeba", "CelebA", 40, 3, (224, 224), multilabel=True),
)
DATASETS: Dict[str, DatasetInfo] = {info.name: info for info in _INFOS}
DATASET_NAMES: Tuple[str, ...] = tuple(DATASETS)
#: A help text for a command-line dataset option.
DATASET_HELP = (f"one of {', '.join(DATASET_NAMES)}, or imagefolder:DIR for your own images in DIR/train/CLASS/*, "
                f"DIR/test/CLASS/* (DIR/val optional), with options as in 'imagefolder:DIR?size=64&mean=0.5,0.5,0.5"
                f"&std=0.25,0.25,0.25' (quote it)")


def _unknown(name) -> UserError:
    return UserError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}, "
                     f"or imagefolder:DIR for a folder of your own images")


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a command-line dataset name; unknown names are a UserError.

    For ``imagefolder:DIR`` this lists the folder and (once per process) decodes the images to
    find the channels and, unless given, the size and normalisation; its ``name`` is the
    canonical spelling (absolute folder, size spelled out).
    """
    if is_imagefolder_name(name):
        return imagefolder_info(name)
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise _unknown(name) from None


def check_dataset_name(name: str) -> str:
    """``name`` if it is a built-in name or a well-formed ``imagefolder:DIR`` whose folder exists; else a UserError.

    Cheap (no image is read): fit for argparse's ``type=`` in place of ``choices=DATASET_NAMES``.
    """
    if is_imagefolder_name(name):
        return check_imagefolder_name(name)
    if not isinstance(name, str) or name not in DATASETS:
        raise _unknown(name)
    return name


def describe_dataset(name: str) -> Dict[str, Any]:
    """A JSON-able record of dataset ``name`` for results' provenance.

    Built-in names: name, display name, shapes and normalisation. ``imagefolder:`` names also the
    folder's absolute path, image size, mode, mean/std (and whether computed or given), classes,
    sample counts per split and ``files_digest``, a sha256 of the file list (relative paths and sizes).
    """
    if is_imagefolder_name(name):
        return load_imagefolder(name).describe()
    info = dataset_info(name)
    mean, std = info.normalization or (None, None)
    return {"name": info.name, "display_name": info.display_name, "kind": "builtin", "n_classes": info.n_classes,
            "n_channels": info.n_channels, "input_size": list(info.input_size), "multilabel": info.multilabel,
            "mean": None if mean is None else list(mean), "std": None if std is None else list(std)}
