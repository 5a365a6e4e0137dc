"""The table of supported datasets: names, shapes, class counts and normalisation constants."""
from dataclasses import dataclass
from typing import Dict, Tuple

from src.errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    ``name`` is the command-line name, ``display_name`` the spelling used in folder names.
    ``input_size`` is the (H, W) of the images the loaders yield. ``multilabel`` datasets have
    float targets in {0, 1} of shape (N, n_classes) instead of int64 class indices.
    """

    name: str
    display_name: str
    n_classes: int
    n_channels: int
    input_size: Tuple[int, int]
    multilabel: bool = False


_INFOS = (
    DatasetInfo("mnist", "MNIST", 10, 1, (32, 32)),
    DatasetInfo("fashion", "FashionMNIST", 10, 1, (32, 32)),
    DatasetInfo("cifar10", "CIFAR10", 10, 3, (32, 32)),
    DatasetInfo("cifar100", "CIFAR100", 100, 3, (32, 32)),
    DatasetInfo("celeba", "CelebA", 40, 3, (224, 224), multilabel=True),
)
DATASETS: Dict[str, DatasetInfo] = {info.name: info for info in _INFOS}
DATASET_NAMES: Tuple[str, ...] = tuple(DATASETS)

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


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a command-line dataset name; unknown names are a UserError."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}") from None
