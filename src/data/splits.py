"""The fixed train/val split of an official train set, and the in-memory split container.

The validation samples are ``val_size`` indices of the official train set drawn by a private
generator with the constant seed :data:`VAL_SPLIT_SEED`, independent of any training seed, so
every model and every run is validated on the same samples. The selection depends only on the
size of the official train set and ``val_size`` (and a smaller ``val_size`` selects a subset of
a larger one's samples). Both parts keep the official order.
"""
from dataclasses import dataclass
from numbers import Integral
from typing import Tuple

import torch

from src.data.registry import DatasetInfo
from src.errors import UserError

SPLITS = ("train", "val", "test")
VAL_SPLIT_SEED = 20210607


def check_split(split: str, val_size: int) -> None:
    """UserError for an unknown split name, or for 'val' when ``val_size`` is 0."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if split == "val" and val_size == 0:
        raise UserError("split 'val' needs val_size > 0; with val_size=0 the whole official train set is 'train'")


def train_val_indices(n_train: int, val_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sorted int64 indices (train, val) of an official train set of ``n_train`` samples.

    ``val_size`` samples go to val and the rest to train; ``0 <= val_size < n_train``.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, Integral) or not 0 <= val_size < n_train:
        raise UserError(f"val_size must be an integer in 0..{n_train - 1} (the official train set has {n_train} samples), got {val_size!r}")
    generator = torch.Generator().manual_seed(VAL_SPLIT_SEED)
    order = torch.randperm(n_train, generator=generator)
    is_val = torch.zeros(n_train, dtype=torch.bool)
    is_val[order[:val_size]] = True
    everything = torch.arange(n_train)
    return everything[~is_val], everything[is_val]


def split_indices(n_train: int, split: str, val_size: int) -> torch.Tensor:
    """Indices into the official train set of ``split`` ('train' or 'val')."""
    train, val = train_val_indices(n_train, val_size)
    return train if split == "train" else val


@dataclass(frozen=True)
class TensorSplit:
    """One split of an in-memory dataset.

    ``images`` are uint8 (N, C, H, W), already resized to ``info.input_size`` and not normalised;
    ``targets`` are int64 class indices (N,). The tensors may share memory with a process-wide
    cache: treat them as read-only.
    """

    info: DatasetInfo
    split: str
    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)
