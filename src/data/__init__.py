"""Datasets held as tensors in memory, batched augmentation and loaders.

- :func:`get_loader` gives a :class:`BatchLoader` of normalised ``(x, y)`` batches of a split
  ('train', 'val' or 'test'); :func:`load_split` gives the whole split unnormalised.
- :func:`dataset_info` / :data:`DATASET_NAMES` describe the datasets: 'mnist', 'fashion',
  'cifar10', 'cifar100' (in memory, batched tensor augmentation) and 'celeba' (read from disk).
- Files are looked for under the paths of :class:`src.config.Config` (``DATASET_ROOT``,
  ``FASHION_MNIST_DIR``, ``CELEBA_ROOT``).
"""
from src.data.celeba import CelebASplit
from src.data.loader import BatchLoader, get_loader, load_split
from src.data.registry import DATASET_NAMES, NORMALIZATION, DatasetInfo, dataset_info
from src.data.splits import SPLITS, TensorSplit

__all__ = [
    "BatchLoader",
    "CelebASplit",
    "DATASET_NAMES",
    "DatasetInfo",
    "NORMALIZATION",
    "SPLITS",
    "TensorSplit",
    "dataset_info",
    "get_loader",
    "load_split",
]
