"""Datasets held as tensors in memory, batched augmentation and loaders.

- :func:`get_loader` gives a :class:`BatchLoader` of normalised ``(x, y)`` batches of a split
  ('train', 'val' or 'test'); :func:`load_split` gives the whole split unnormalised.
- :func:`dataset_info` / :data:`DATASET_NAMES` describe the datasets: 'mnist', 'fashion',
  'cifar10', 'cifar100' (in memory, batched tensor augmentation) and 'celeba' (read from disk);
  ``imagefolder:DIR[?size=..&mean=..&std=..]`` names a folder of the user's own images, held in
  memory too (:mod:`src.data.imagefolder`). :func:`check_dataset_name` validates a name for the
  command line, :func:`with_image_options` adds ``--image-size/--mean/--std`` to it, and
  :func:`describe_dataset` gives a JSON-able provenance record.
- :class:`NamedData` / :class:`UserData` (:mod:`src.data.source`): one interface to a named data set and to the
  user's own Datasets, DataLoaders or batches from Python.
- Files are looked for under the paths of :class:`src.config.Config` (``DATASET_ROOT``,
  ``FASHION_MNIST_DIR``, ``CELEBA_ROOT``).
"""
from src.data.celeba import CelebASplit
from src.data.imagefolder import imagefolder_name, is_imagefolder_name, parse_floats, parse_size, with_image_options
from src.data.loader import BatchLoader, get_loader, load_split
from src.data.registry import (DATASET_HELP, DATASET_NAMES, NORMALIZATION, DatasetInfo, check_dataset_name,
                               dataset_info, describe_dataset)
from src.data.source import USER_DATA, DataSource, NamedData, UserData
from src.data.splits import SPLITS, TensorSplit

__all__ = [
    "BatchLoader",
    "CelebASplit",
    "DATASET_HELP",
    "DATASET_NAMES",
    "DataSource",
    "DatasetInfo",
    "NamedData",
    "USER_DATA",
    "UserData",
    "NORMALIZATION",
    "SPLITS",
    "TensorSplit",
    "check_dataset_name",
    "dataset_info",
    "describe_dataset",
    "get_loader",
    "imagefolder_name",
    "is_imagefolder_name",
    "load_split",
    "parse_floats",
    "parse_size",
    "with_image_options",
]
