"""MNIST and Fashion-MNIST: IDX files decoded to uint8 tensors, resized to 32x32 once at load.

Folders searched, in order (the first holding all four files wins; each file may be gzipped):

- MNIST: ``DATASET_ROOT/MNIST/raw`` (torchvision's layout).
- Fashion-MNIST: ``DATASET_ROOT/FashionMNIST/raw``, then ``FASHION_MNIST_DIR`` (the folder of
  Debian's ``dataset-fashion-mnist`` package, files directly inside).

The 28x28 images are resized with antialiased bilinear interpolation on uint8, which gives the
same bytes as PIL's ``Image.resize(..., BILINEAR)`` (what the reference's ``Resize((32, 32))``
did per sample). Decoded tensors are cached in memory for the life of the process, keyed by the
files' paths, sizes and modification times; nothing is written next to the data.
"""
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from src.config import Config
from src.data.files import FileKey, file_key, torchvision_class, torchvision_download
from src.data.idx import read_idx
from src.data.registry import dataset_info
from src.errors import UserError

IMAGE_FILES = {True: "train-images-idx3-ubyte", False: "t10k-images-idx3-ubyte"}
LABEL_FILES = {True: "train-labels-idx1-ubyte", False: "t10k-labels-idx1-ubyte"}
ALL_FILES = tuple(IMAGE_FILES.values()) + tuple(LABEL_FILES.values())
#: torchvision's dataset class of each name (by attribute name of ``torchvision.datasets``, imported only to
#: download: importing torchvision costs a script about 1.5 s of start-up).
TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion": "FashionMNIST"}


def search_folders(name: str, config: Config) -> List[Tuple[Path, str]]:
    """The folders searched for ``name`` ('mnist' or 'fashion'), each with the config key setting it."""
    folders = [(config.dataset_root / dataset_info(name).display_name / "raw", "DATASET_ROOT")]
    if name == "fashion":
        folders.append((config.fashion_mnist_dir, "FASHION_MNIST_DIR"))
    return folders


def _find_file(folder: Path, stem: str) -> Optional[Path]:
    """``folder/stem``, else ``folder/stem.gz``, else None."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _files_in(folder: Path) -> Optional[Dict[str, Path]]:
    """The four IDX files in ``folder``, or None when any is missing."""
    files = {stem: _find_file(folder, stem) for stem in ALL_FILES}
    return None if None in files.values() else files


def _missing_error(name: str, folders: List[Tuple[Path, str]]) -> UserError:
    display = dataset_info(name).display_name
    searched = " and ".join(str(folder) for folder, _ in folders)
    keys = " or ".join(sorted({key for _, key in folders}))
    hint = ", install the Debian package dataset-fashion-mnist" if name == "fashion" else ""
    return UserError(
        f"{display} not found: no folder among {searched} holds all of {', '.join(ALL_FILES)} "
        f"(each optionally .gz); set {keys} in config/default.env or the environment{hint}, "
        f"or pass --download to fetch it"
    )


def locate_files(name: str, config: Config, download: bool = False) -> Dict[str, Path]:
    """The IDX files of ``name`` by stem; downloads them with torchvision when missing and asked to."""
    folders = search_folders(name, config)
    for folder, _ in folders:
        files = _files_in(folder)
        if files is not None:
            return files
    if download:
        torchvision_download(torchvision_class(TORCHVISION_CLASSES[name]), config.dataset_root, dataset_info(name).display_name)
        files = _files_in(folders[0][0])
        if files is not None:
            return files
    raise _missing_error(name, folders)


@lru_cache(maxsize=4)
def _decode(images_key: FileKey, labels_key: FileKey, size: Tuple[int, int], n_classes: int):
    images_path, labels_path = Path(images_key[0]), Path(labels_key[0])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != "u1":
        raise UserError(f"{images_path} holds {images.dtype} data of shape {images.shape}, not uint8 (N, H, W) images")
    if labels.shape != (len(images),) or labels.dtype != "u1":
        raise UserError(f"{labels_path} holds {labels.dtype} data of shape {labels.shape}, not {len(images)} uint8 labels")
    if labels.size and int(labels.max()) >= n_classes:
        raise UserError(f"{labels_path} has label {int(labels.max())}, outside 0..{n_classes - 1}")
    images_t = torch.from_numpy(images.copy()).unsqueeze(1)
    if tuple(images_t.shape[-2:]) != size and len(images_t):
        images_t = F.interpolate(images_t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return images_t.contiguous(), torch.from_numpy(labels.astype("int64"))


def load_mnist_like(name: str, train: bool, config: Config, download: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """The official train (``train=True``) or test split of 'mnist' or 'fashion'.

    Returns uint8 images (N, 1, 32, 32) and int64 labels (N,). The tensors are shared by a
    process-wide cache: treat them as read-only.
    """
    info = dataset_info(name)
    files = locate_files(name, config, download)
    return _decode(file_key(files[IMAGE_FILES[train]]), file_key(files[LABEL_FILES[train]]), info.input_size, info.n_classes)
