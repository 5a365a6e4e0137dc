"""CelebA: 40 binary attributes, images read from disk per sample (too large to hold in memory).

``CELEBA_ROOT/train.csv`` and ``CELEBA_ROOT/test.csv`` have a column ``img`` (image path relative
to the CSV's folder) and 40 attribute columns of -1/+1, mapped to float targets 0/1. Images are
read with PIL and converted to RGB, then (torchvision functional ops on PIL images):

- eval:  Resize((256, 256)) -> CenterCrop(224) -> x * 255 - 117
- train: Resize((256, 256)) -> RandomCrop(224) -> Pad(10, edge) -> RandomRotation(10) -> CenterCrop(224)
  -> x * 255 - 117

``x * 255`` of ``ToTensor()`` is the uint8 pixel value, so the tensor is taken from the bytes
directly. The random crop and angle come from a per-sample seed that the loader draws from its
own generator, so augmentations are reproducible and the global RNG is never touched.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from src.config import Config
from src.data.registry import DatasetInfo, dataset_info
from src.errors import UserError

RESIZE = (256, 256)
CROP = 224
PAD = 10
MAX_ROTATION = 10.0
PIXEL_OFFSET = 117.0


@dataclass(frozen=True)
class CelebASplit:
    """One split of CelebA: image paths and float targets (N, 40) in {0, 1}."""

    info: DatasetInfo
    split: str
    paths: Tuple[Path, ...]
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.paths)


def read_csv(path: Path, n_attributes: int) -> Tuple[Tuple[Path, ...], torch.Tensor]:
    """Image paths (resolved against the CSV's folder) and {0, 1} float targets of one CelebA CSV."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a readable CSV file ({err})") from None
    if "img" not in frame.columns:
        raise UserError(f"{path} has no 'img' column; its columns are {', '.join(map(str, frame.columns))}")
    attributes = frame.drop(columns="img")
    if attributes.shape[1] != n_attributes:
        raise UserError(f"{path} has {attributes.shape[1]} attribute columns besides 'img', expected {n_attributes}")
    values = attributes.to_numpy()
    if not ((values == 1) | (values == -1)).all():
        raise UserError(f"{path}: attribute values must all be -1 or +1")
    targets = torch.from_numpy((values + 1) / 2).float()
    paths = tuple(path.parent / str(name) for name in frame["img"])
    return paths, targets


def load_celeba(train: bool, config: Config) -> Tuple[Tuple[Path, ...], torch.Tensor]:
    """Paths and targets of ``train.csv`` (``train=True``) or ``test.csv`` under ``CELEBA_ROOT``."""
    path = config.celeba_root / ("train.csv" if train else "test.csv")
    if not path.is_file():
        raise UserError(
            f"CelebA not found: {config.celeba_root} has no {path.name}; set CELEBA_ROOT in config/default.env "
            f"or the environment to the folder holding train.csv, test.csv and the images "
            f"(this CSV layout cannot be fetched with --download)"
        )
    return read_csv(path, dataset_info("celeba").n_classes)


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"CelebA image {path} does not exist, yet a CSV under CELEBA_ROOT lists it") from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"CelebA image {path} cannot be read ({err})") from None


def eval_transform(image: Image.Image) -> torch.Tensor:
    """Resize((256, 256)) -> CenterCrop(224) -> float (3, 224, 224) of ``pixel - 117``."""
    import torchvision.transforms.functional as TF  # here, not at import: torchvision costs every script ~1.5 s

    image = TF.center_crop(TF.resize(image, list(RESIZE)), [CROP, CROP])
    return TF.pil_to_tensor(image).float() - PIXEL_OFFSET


def train_transform(image: Image.Image, generator: torch.Generator) -> torch.Tensor:
    """Resize -> RandomCrop(224) -> Pad(10, edge) -> RandomRotation(10) -> CenterCrop(224) -> ``pixel - 117``."""
    import torchvision.transforms.functional as TF

    image = TF.resize(image, list(RESIZE))
    top, left = torch.randint(0, RESIZE[0] - CROP + 1, (2,), generator=generator).tolist()
    image = TF.crop(image, top, left, CROP, CROP)
    image = TF.pad(image, PAD, padding_mode="edge")
    angle = torch.empty(1, dtype=torch.float64).uniform_(-MAX_ROTATION, MAX_ROTATION, generator=generator).item()
    image = TF.center_crop(TF.rotate(image, angle), [CROP, CROP])
    return TF.pil_to_tensor(image).float() - PIXEL_OFFSET


class CelebADataset(Dataset):
    """Map-style dataset over a :class:`CelebASplit`, indexed by ``(index, seed)`` pairs.

    With ``augment`` the seed (an int drawn by the loader) seeds the sample's train transform;
    without, the seed is ignored and the eval transform is used.
    """

    def __init__(self, split: CelebASplit, augment: bool):
        self.split = split
        self.augment = augment

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: Tuple[int, Optional[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        image = _open_rgb(self.split.paths[index])
        if self.augment:
            x = train_transform(image, torch.Generator().manual_seed(seed))
        else:
            x = eval_transform(image)
        return x, self.split.targets[index]
