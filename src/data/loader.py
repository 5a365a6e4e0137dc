"""Loaders: :func:`load_split` for a whole split, :func:`get_loader` for batches.

Splits: 'test' is the official test split; 'val' is a fixed held-out part of ``val_size``
samples of the official train split, chosen by a constant seed that does not depend on the
loader's ``seed`` (every model and run shares the same validation samples, see
:mod:`src.data.splits`); 'train' is the rest of the official train split. For CelebA the
official train split is ``train.csv``; for ``imagefolder:DIR`` it is ``DIR/train``, and 'val' is
``DIR/val`` instead when that folder exists (:mod:`src.data.imagefolder`).

MNIST, Fashion-MNIST, CIFAR and image folders are held in memory as uint8 tensors (moved to ``device`` once,
when the loader is built); each batch is sliced from them, augmented as a whole batch with
tensor ops (:mod:`src.data.augment`) and normalised. CelebA is read from disk per sample through
a ``torch.utils.data.DataLoader``.

All randomness (shuffling and augmentation) comes from a private ``torch.Generator`` seeded with
``seed`` when the loader is built: the same seed gives the same batches and augmentations, and
every new pass over the loader continues the generator, so each epoch has a new order and new
augmentations, deterministically. The global RNG is never used. ``state_dict()`` /
``load_state_dict()`` capture the generator and the position within the current pass, so a
resumed training run continues with exactly the batches the interrupted one would have seen.

``shard=(rank, size)`` (training under torchrun, :mod:`src.distributed`): every rank draws the
same order and the same augmentations as one process would, builds the same global batch of
``batch_size`` samples and yields only its slice ``rank * batch_size / size`` to
``(rank + 1) * batch_size / size``; so the slices of all ranks are, together and in rank order,
exactly the batch one process yields (the same samples, the same augmentations), and every
rank's generator and ``state_dict()`` are the same. The price is that each rank augments the
whole global batch (cheap tensor ops next to a forward and backward pass). CelebA hands each
rank's slice of the per-sample order and augmentation seeds to its DataLoader, so nothing
is read twice.
"""
import math
from functools import partial
from numbers import Integral
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import torch
from torch.utils.data import DataLoader

from src.config import Config, get_config, resolve_device
from src.data.augment import normalize, random_affine, random_crop_flip
from src.data.celeba import CelebADataset, CelebASplit, load_celeba
from src.data.cifar import load_cifar
from src.data.imagefolder import ImageFolderData, is_imagefolder_name, load_imagefolder
from src.data.mnist_like import load_mnist_like
from src.data.registry import DatasetInfo, dataset_info
from src.data.splits import TensorSplit, check_split, split_indices
from src.errors import UserError
from src.seeding import generator as make_generator

Batch = Tuple[torch.Tensor, torch.Tensor]
Split = Union[TensorSplit, CelebASplit]

# Readers of the official (train=True) or test split: (train, config, download) -> (uint8 images, labels).
_READERS: Dict[str, Callable[..., Tuple[torch.Tensor, torch.Tensor]]] = {
    "mnist": partial(load_mnist_like, "mnist"),
    "fashion": partial(load_mnist_like, "fashion"),
    "cifar10": partial(load_cifar, "cifar10"),
    "cifar100": partial(load_cifar, "cifar100"),
}
# Train-time augmentation of each in-memory dataset, on float images in 0..255.
_AUGMENTATIONS: Dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "mnist": random_affine,
    "fashion": random_affine,
    "cifar10": random_crop_flip,
    "cifar100": random_crop_flip,
}


def load_split(name: str, split: str, *, val_size: int = 5000, download: bool = False,
               config: Optional[Config] = None) -> Split:
    """One whole split of a dataset, unshuffled and unaugmented.

    ``split`` is 'train', 'val' or 'test' (see the module docstring; ``val_size=0`` leaves no
    'val'). For the in-memory datasets this is a :class:`TensorSplit` of uint8 images (N, C, 32, 32)
    and int64 targets; for 'celeba' a :class:`CelebASplit` of image paths and float targets (N, 40).
    Missing files raise a :class:`UserError`, or are fetched with torchvision when ``download``.
    """
    if is_imagefolder_name(name):
        return _imagefolder_split(load_imagefolder(name), split, val_size)
    info = dataset_info(name)
    check_split(split, val_size)
    config = get_config() if config is None else config
    if name == "celeba":
        return _celeba_split(info, split, val_size, config)
    images, targets = _READERS[name](split != "test", config, download)
    if split != "test":
        indices = split_indices(len(targets), split, val_size)
        images, targets = images[indices], targets[indices]
    return TensorSplit(info, split, images, targets)


def _imagefolder_split(folder: ImageFolderData, split: str, val_size: int) -> TensorSplit:
    """An image folder's split: 'val' from ``DIR/val`` when it exists, else held out of ``DIR/train``."""
    check_split(split, 1 if folder.has_val else val_size)
    if folder.has_val:
        images, targets = folder.val_folder() if split == "val" else folder.official(split != "test")
    else:
        images, targets = folder.official(split != "test")
        if split != "test":
            indices = split_indices(len(targets), split, val_size)
            images, targets = images[indices], targets[indices]
    return TensorSplit(folder.info, split, images, targets)


def _augmentation(info: DatasetInfo) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The train-time augmentation of an in-memory dataset; image folders: crop (padding 1/8 of the side) and flip."""
    if info.name in _AUGMENTATIONS:
        return _AUGMENTATIONS[info.name]
    return partial(random_crop_flip, padding=max(1, min(info.input_size) // 8))


def _celeba_split(info: DatasetInfo, split: str, val_size: int, config: Config) -> CelebASplit:
    """CelebA's split: 'test' from test.csv, 'train' and 'val' from the rows of train.csv."""
    paths, targets = load_celeba(split != "test", config)
    if split != "test":
        indices = split_indices(len(targets), split, val_size)
        paths, targets = tuple(paths[i] for i in indices.tolist()), targets[indices]
    return CelebASplit(info, split, paths, targets)


def _truncate(split: Split, max_samples: Optional[int]) -> Split:
    """The first ``max_samples`` samples of ``split`` (all of them when None)."""
    if max_samples is None:
        return split
    if isinstance(split, CelebASplit):
        return CelebASplit(split.info, split.split, split.paths[:max_samples], split.targets[:max_samples])
    return TensorSplit(split.info, split.split, split.images[:max_samples], split.targets[:max_samples])


class BatchLoader:
    """Re-iterable batches ``(x, y)`` of one split, on ``device``.

    ``x`` is float32 (N, C, H, W), normalised; ``y`` int64 class indices (N,), or float32 (N, 40)
    in {0, 1} for CelebA. ``len(loader)`` is the number of batches per pass. Attributes:
    ``info`` (:class:`DatasetInfo`), ``num_samples``, ``batch_size``, ``shuffle``, ``augment``,
    ``drop_last``, ``device``.
    """

    def __init__(self, info: DatasetInfo, num_samples: int, batch_size: int, shuffle: bool, augment: bool,
                 seed: int, device: torch.device, drop_last: bool, shard: Tuple[int, int] = (0, 1)):
        self.info = info
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.device = device
        self.shard = shard  # (rank, size): this rank's slice of every batch, see the module docstring
        self._generator = make_generator(seed)
        self._pass_start: Optional[torch.Tensor] = None  # generator state when the current pass began
        self._position = 0  # batches of the current pass already yielded
        self._resume: Optional[Dict[str, Any]] = None

    def state_dict(self) -> Dict[str, Any]:
        """Where the batches stand: the generator now, at the start of the current pass, and the position in it."""
        return {"generator": self._generator.get_state(), "pass_start": self._pass_start, "position": self._position}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the next pass yields the rest of the interrupted pass."""
        self._generator.set_state(state["generator"])
        self._resume = dict(state) if state["pass_start"] is not None else None

    def _begin_pass(self) -> Tuple[Optional[torch.Tensor], int, Optional[Dict[str, Any]]]:
        """The sample order of this pass, the first batch to yield and the resumed state (None for a new pass).

        A resumed pass redraws its order from the generator state at the start of the interrupted
        pass; the caller then restores (or replays) the draws that followed.
        """
        resume, self._resume = self._resume, None
        if resume is not None:
            self._generator.set_state(resume["pass_start"])
        self._pass_start = self._generator.get_state()
        order = self._permutation()
        self._position = resume["position"] if resume is not None else 0
        return order, self._position, resume

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def _shard_slice(self) -> slice:
        """The positions of this rank's samples within a (full) batch."""
        rank, size = self.shard
        per_rank = self.batch_size // size
        return slice(rank * per_rank, (rank + 1) * per_rank)

    def _permutation(self) -> Optional[torch.Tensor]:
        """The sample order of the next pass: a fresh permutation when shuffling, else None (in order)."""
        return torch.randperm(self.num_samples, generator=self._generator) if self.shuffle else None

    def __iter__(self) -> Iterator[Batch]:
        raise NotImplementedError


class TensorBatchLoader(BatchLoader):
    """Batches sliced from uint8 tensors held on ``device``, augmented per batch with tensor ops."""

    def __init__(self, split: TensorSplit, batch_size: int, shuffle: bool, augment: bool, seed: int,
                 device: torch.device, drop_last: bool, shard: Tuple[int, int] = (0, 1)):
        super().__init__(split.info, len(split), batch_size, shuffle, augment, seed, device, drop_last, shard)
        self._images = split.images.to(device)
        self._targets = split.targets.to(device)
        self._mean, self._std = split.info.normalization
        self._augmentation = _augmentation(split.info)

    def __iter__(self) -> Iterator[Batch]:
        order, first, resume = self._begin_pass()
        if resume is not None:  # the augmentations of the batches already used were drawn after the order
            self._generator.set_state(resume["generator"])
        order = None if order is None else order.to(self.device)
        for b in range(first, len(self)):
            start, stop = b * self.batch_size, min((b + 1) * self.batch_size, self.num_samples)
            if order is None:
                x, y = self._images[start:stop], self._targets[start:stop]
            else:
                index = order[start:stop]
                x, y = self._images[index], self._targets[index]
            x = x.float()
            if self.augment:
                x = self._augmentation(x, self._generator)
            if self.shard[1] > 1:
                mine = self._shard_slice()
                x, y = x[mine], y[mine]
            self._position = b + 1
            yield normalize(x, self._mean, self._std), y


class CelebABatchLoader(BatchLoader):
    """Batches of CelebA images read and transformed per sample by a ``torch.utils.data.DataLoader``."""

    def __init__(self, split: CelebASplit, batch_size: int, shuffle: bool, augment: bool, seed: int,
                 device: torch.device, drop_last: bool, num_workers: int, shard: Tuple[int, int] = (0, 1)):
        super().__init__(split.info, len(split), batch_size, shuffle, augment, seed, device, drop_last, shard)
        self._dataset = CelebADataset(split, augment)
        self.num_workers = num_workers

    def __iter__(self) -> Iterator[Batch]:
        permutation, first, _ = self._begin_pass()  # every draw of a pass happens here: a resume replays them
        order = range(self.num_samples) if permutation is None else permutation.tolist()
        if self.augment:
            seeds = torch.randint(0, 2**62, (self.num_samples,), generator=self._generator).tolist()
        else:
            seeds = [None] * self.num_samples
        # generator=: the DataLoader draws its workers' base seed from it instead of the global RNG.
        sampler = list(zip(order, seeds))[first * self.batch_size:]
        batch_size = self.batch_size
        if self.shard[1] > 1:  # full batches only (drop_last): this rank's slice of each
            mine, full = self._shard_slice(), len(sampler) // self.batch_size
            sampler = [item for b in range(full) for item in sampler[b * batch_size:(b + 1) * batch_size][mine]]
            batch_size = mine.stop - mine.start
        loader = DataLoader(self._dataset, batch_size=batch_size, sampler=sampler,
                            num_workers=self.num_workers, drop_last=self.drop_last,
                            pin_memory=self.device.type == "cuda", generator=self._generator)
        for b, (x, y) in enumerate(loader, start=first):
            self._position = b + 1
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def _check_int(name: str, value, minimum: int = 1) -> None:
    """UserError unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")


def get_loader(name: str, split: str, batch_size: int = 128, *, shuffle: Optional[bool] = None,
               augment: Optional[bool] = None, seed: int = 0, device: Union[str, torch.device] = "cpu",
               val_size: int = 5000, drop_last: bool = False, max_samples: Optional[int] = None,
               download: bool = False, config: Optional[Config] = None, num_workers: int = 0,
               shard: Tuple[int, int] = (0, 1)) -> BatchLoader:
    """A :class:`BatchLoader` over ``split`` ('train', 'val' or 'test') of dataset ``name``.

    ``shuffle`` and ``augment`` default to ``split == 'train'``. ``seed`` seeds the loader's own
    generator for shuffling and augmentation (never the global RNG; it does not change which
    samples are in 'val'). ``val_size`` samples of the official train split form 'val' (0: no
    'val'). ``max_samples`` keeps the first N samples of the split. ``device``: where batches are
    yielded ('cpu', 'cuda', 'auto', ...). ``download`` fetches missing files with torchvision.
    ``config`` defaults to :func:`src.config.get_config`. ``num_workers`` is used by CelebA only
    (the DataLoader's worker processes); the other datasets need none. ``shard=(rank, size)``:
    yield only this rank's ``batch_size / size`` samples of every batch (see the module docstring);
    needs ``drop_last`` and a ``batch_size`` divisible by ``size``.
    """
    info = dataset_info(name)
    if not is_imagefolder_name(name):  # an image folder's split is checked by load_split (DIR/val may exist)
        check_split(split, val_size)
    _check_int("batch_size", batch_size)
    _check_int("num_workers", num_workers, minimum=0)
    _check_int("seed", seed, minimum=0)
    if max_samples is not None:
        _check_int("max_samples", max_samples)
    _check_shard(shard, batch_size, drop_last)
    torch_device = resolve_device(str(device))
    shuffle = split == "train" if shuffle is None else shuffle
    augment = split == "train" if augment is None else augment
    data = _truncate(load_split(name, split, val_size=val_size, download=download, config=config), max_samples)
    if info.name == "celeba":
        return CelebABatchLoader(data, batch_size, shuffle, augment, seed, torch_device, drop_last, num_workers, shard)
    return TensorBatchLoader(data, batch_size, shuffle, augment, seed, torch_device, drop_last, shard)


def _check_shard(shard: Tuple[int, int], batch_size: int, drop_last: bool) -> None:
    """A shard splits full batches into equal slices (unequal ones would weigh samples unequally in DDP's mean)."""
    rank, size = shard
    if size == 1:
        return
    if not 0 <= rank < size:
        raise ValueError(f"shard {shard}: the rank must lie in 0..{size - 1}")
    if not drop_last:
        raise ValueError("a sharded loader needs drop_last=True: a last partial batch cannot be split evenly")
    if batch_size % size:
        raise ValueError(f"batch_size {batch_size} cannot be split evenly into {size} shards")
