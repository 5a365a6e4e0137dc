"""CIFAR-10 and CIFAR-100 read from the python pickles of the official archives.

Layout (torchvision's): ``DATASET_ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}`` and
``DATASET_ROOT/cifar-100-python/{train,test}``. Each pickle is a dict with ``data`` (N x 3072
uint8, channel-major 32x32 planes) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100).
The files are read directly rather than through torchvision, whose md5 checks would reject
anything but the official archives. Decoded tensors are cached in memory for the process.
"""
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from src.config import Config
from src.data.files import FileKey, file_key, torchvision_class, torchvision_download
from src.data.registry import dataset_info
from src.errors import UserError

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FILES: Dict[str, Dict[bool, Tuple[str, ...]]] = {
    "cifar10": {True: tuple(f"data_batch_{i}" for i in range(1, 6)), False: ("test_batch",)},
    "cifar100": {True: ("train",), False: ("test",)},
}
LABEL_KEYS = {"cifar10": "labels", "cifar100": "fine_labels"}
#: torchvision's dataset class of each name (by attribute name of ``torchvision.datasets``, imported only to
#: download: importing torchvision costs a script about 1.5 s of start-up).
TORCHVISION_CLASSES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def _entry(batch: dict, key: str, path: Path):
    """``batch[key]`` whether the pickle's keys are bytes (python 2 pickles) or str."""
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise UserError(f"{path} has no {key!r} entry; it is not a CIFAR batch file")


def _read_batch(path: Path, label_key: str, n_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as err:
        raise UserError(f"{path} is a corrupt or truncated pickle ({err}); delete it and fetch it again") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path} holds a {type(batch).__name__}, not a CIFAR batch dict")
    data = np.asarray(_entry(batch, "data", path))
    labels = np.asarray(_entry(batch, label_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: 'data' is {data.dtype} of shape {data.shape}, not uint8 (N, 3072)")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: {label_key!r} has shape {labels.shape}, not {len(data)} integer labels")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise UserError(f"{path}: labels must lie in 0..{n_classes - 1}, found {labels.min()}..{labels.max()}")
    return data, labels


@lru_cache(maxsize=4)
def _decode(keys: Tuple[FileKey, ...], label_key: str, n_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    batches = [_read_batch(Path(key[0]), label_key, n_classes) for key in keys]
    data = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([b[1] for b in batches]).astype(np.int64)
    return torch.from_numpy(data), torch.from_numpy(labels)


def _paths(name: str, folder: Path, train: bool) -> List[Path]:
    return [folder / stem for stem in FILES[name][train]]


def load_cifar(name: str, train: bool, config: Config, download: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """The official train (``train=True``) or test split of 'cifar10' or 'cifar100'.

    Returns uint8 images (N, 3, 32, 32) and int64 labels (N,). The tensors are shared by a
    process-wide cache: treat them as read-only.
    """
    info = dataset_info(name)
    folder = config.dataset_root / FOLDERS[name]
    all_files = _paths(name, folder, True) + _paths(name, folder, False)
    if download and not all(p.is_file() for p in all_files):
        torchvision_download(torchvision_class(TORCHVISION_CLASSES[name]), config.dataset_root, info.display_name)
    missing = [p.name for p in all_files if not p.is_file()]
    if missing:
        raise UserError(
            f"{info.display_name} not found: {folder} lacks {', '.join(missing)}; set DATASET_ROOT in "
            f"config/default.env or the environment to the folder holding {FOLDERS[name]}, "
            f"or pass --download to fetch it"
        )
    keys = tuple(file_key(p) for p in _paths(name, folder, train))
    return _decode(keys, LABEL_KEYS[name], info.n_classes)
