"""What a model needs to know about a dataset: :class:`DatasetInfo` (one record per data set)."""
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    ``name`` is the command-line name, ``display_name`` the spelling used in folder names.
    ``input_size`` is the (H, W) of the images the loaders yield. ``multilabel`` datasets have
    float targets in {0, 1} of shape (N, n_classes) instead of int64 class indices.
    ``normalization`` is the per-channel ``(mean, std)`` of pixels in [0, 1] that the loaders apply
    (None for CelebA, which has its own transform); ``class_names`` are given where known
    (image folders: the class folders' names, in label order).
    """

    name: str
    display_name: str
    n_classes: int
    n_channels: int
    input_size: Tuple[int, int]
    multilabel: bool = False
    normalization: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None
    class_names: Tuple[str, ...] = ()
