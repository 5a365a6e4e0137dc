"""Users' own images: the dataset name ``imagefolder:DIR``, held in memory like CIFAR.

Name
----
``imagefolder:DIR`` names a folder laid out as torchvision's ImageFolder expects, one split per
sub-folder and one class per sub-sub-folder::

    DIR/train/<class>/...images...   required
    DIR/test/<class>/...images...    required
    DIR/val/<class>/...images...     optional

Options follow a ``?`` as ``key=value`` pairs joined by ``&`` (quote the name in a shell)::

    imagefolder:DIR?size=64
    imagefolder:DIR?size=48x64&mean=0.5,0.45,0.4&std=0.25,0.25,0.25

- ``size=N`` or ``size=HxW`` (height x width): every image is resized to it. Default: the size of
  the first training image (of the first class, in sorted order).
- ``mean=...`` and ``std=...``: the per-channel normalisation of pixels scaled to [0, 1], one value
  per channel (or one for all). Default: computed from all images of ``DIR/train`` (population
  mean and std of every pixel of a channel, after resizing), once per process and folder.

:func:`imagefolder_name` builds such a name from a folder and the values of ``--image-size``,
``--mean`` and ``--std``; :func:`with_image_options` adds those flags to a name given with
``-d``. :func:`parse_size` and :func:`parse_floats` are the option parsers, usable as argparse
``type=``. ``DIR`` may be relative (to the working directory) and start with ``~``; a ``?`` in
``DIR`` itself is read as the start of the options only when ``key=`` follows it.

:func:`src.data.dataset_info` gives the canonical name (``DIR`` absolute and resolved, the size
always spelled out, mean/std only when given), which is what results and checkpoints record, so
the name means the same data from any working directory; :func:`src.data.describe_dataset`
gives a JSON-able record of the data (folder, size, mode, normalisation, classes, sample counts
and a digest of the file list).

Data
----
Files are those whose names end in one of :data:`IMAGE_EXTENSIONS` (any case), found in each
class folder and its sub-folders, in torchvision's order (``sorted(os.walk(...))``, files sorted);
classes are the class folders' names in sorted order, label ``i`` is the ``i``-th. Unlike
torchvision, names starting with ``.`` (``.ipynb_checkpoints``, macOS ``._x.jpg``) are skipped.
Images are decoded with PIL and converted to RGB, or to L (one channel) when every image of every
split is grayscale (PIL modes 1, L, LA, I, I;16, F; 16-bit grayscale is scaled to 8 bits, not
clipped), then resized with PIL's bilinear filter (antialiased when shrinking) and held as uint8
tensors (N, C, H, W), decoded once per process and cached by the files' paths, sizes and
modification times. Every split is decoded when the folder is first named (:func:`load_imagefolder`,
which :func:`src.data.dataset_info` calls), so a bad image anywhere is reported before any work.
Nothing is written anywhere.

'val' is ``DIR/val`` when it exists (``val_size`` is then ignored and 'train' is all of
``DIR/train``); otherwise ``val_size`` images held out of ``DIR/train`` exactly as for the
built-in datasets (:mod:`src.data.splits`). Training augmentation is CIFAR's random crop (with
zero padding of 1/8 of the image side) and horizontal flip.

Every problem with the folder (missing folders, empty class folders, class lists that differ
between splits, unreadable or corrupt images, bad options) is a :class:`UserError` naming the
file or folder.
"""
import hashlib
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from src.data.files import FileKey, file_key
from src.data.info import DatasetInfo
from src.errors import UserError

PREFIX = "imagefolder:"
#: torchvision's ``IMG_EXTENSIONS`` (what ImageFolder reads).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")
OPTION_KEYS = ("size", "mean", "std")
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
LAYOUT_HINT = ("an image folder holds DIR/train and DIR/test (DIR/val optional), each with one sub-folder "
               "of images per class, e.g. DIR/train/cat/001.png")
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

Size = Tuple[int, int]
Floats = Tuple[float, ...]
# Files of one split: ((path, size, mtime_ns), label) in sample order.
SplitFiles = Tuple[Tuple[FileKey, int], ...]


@dataclass(frozen=True)
class ImageFolderSpec:
    """A parsed ``imagefolder:`` name: the folder and the options given (None: not given)."""

    root: Path
    size: Optional[Size] = None
    mean: Optional[Floats] = None
    std: Optional[Floats] = None


# ----------------------------------------------------------------------------------------------- names


def is_imagefolder_name(name) -> bool:
    """Whether ``name`` is an ``imagefolder:...`` dataset name (well formed or not)."""
    return isinstance(name, str) and name.startswith(PREFIX)


def parse_size(text: Union[str, int, Sequence[int]]) -> Size:
    """``'32'`` -> (32, 32), ``'48x64'`` -> (48, 64) (height x width); ints and (H, W) pairs pass through."""
    if isinstance(text, str):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
        if match is None:
            raise UserError(f"image size {text!r} is not N or HxW (height x width in pixels), e.g. 32 or 48x64")
        height, width = int(match[1]), int(match[2] or match[1])
    elif isinstance(text, int) and not isinstance(text, bool):
        height = width = text
    else:
        try:
            height, width = (int(v) for v in text)
        except (TypeError, ValueError):
            raise UserError(f"image size {text!r} is not N or (height, width)") from None
    if height < 1 or width < 1:
        raise UserError(f"image size {text!r} must be at least 1 pixel each way")
    return height, width


def parse_floats(text: Union[str, float, Sequence[float]], what: str = "value") -> Floats:
    """``'0.5,0.4,0.3'`` (or numbers) -> finite floats; one per channel, or one for all."""
    parts = text.split(",") if isinstance(text, str) else [text] if isinstance(text, (int, float)) else list(text)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise UserError(f"{what} {text!r} is not a comma-separated list of numbers, e.g. 0.5,0.45,0.4") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"{what} {text!r} must be one or more finite numbers, one per channel")
    return values


def _check_std(std: Floats, where: str) -> Floats:
    if any(v <= 0 for v in std):
        raise UserError(f"std {','.join(map(repr, std))} in {where}: every value must be > 0")
    return std


def parse_imagefolder_name(name: str) -> ImageFolderSpec:
    """The folder and options of ``imagefolder:DIR[?size=..&mean=..&std=..]`` (the folder is not looked at)."""
    if not is_imagefolder_name(name):
        raise UserError(f"{name!r} is not an image folder name; write imagefolder:DIR")
    rest = name[len(PREFIX):]
    path, sep, query = rest.rpartition("?")
    if not sep or "=" not in query:
        path, query = rest, ""
    if not path:
        raise UserError(f"{name!r} names no folder; write imagefolder:DIR, e.g. imagefolder:./my_images")
    options: Dict[str, str] = {}
    for part in query.split("&") if query else ():
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in OPTION_KEYS:
            raise UserError(f"{name!r}: unknown option {part!r}; the options are size=N|HxW, mean=M1,M2,.. "
                            f"and std=S1,S2,.. joined by '&'")
        if key in options:
            raise UserError(f"{name!r}: option {key!r} is given twice")
        options[key] = value
    size = parse_size(options["size"]) if "size" in options else None
    mean = parse_floats(options["mean"], "mean") if "mean" in options else None
    std = _check_std(parse_floats(options["std"], "std"), repr(name)) if "std" in options else None
    return ImageFolderSpec(Path(path).expanduser(), size, mean, std)


def _format_floats(values: Floats) -> str:
    return ",".join(repr(float(v)) for v in values)


def _format_size(size: Size) -> str:
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"


def format_imagefolder_name(spec: ImageFolderSpec) -> str:
    """The name of ``spec``: ``imagefolder:ROOT`` plus the options given, in the order size, mean, std."""
    options = []
    if spec.size is not None:
        options.append(f"size={_format_size(spec.size)}")
    if spec.mean is not None:
        options.append(f"mean={_format_floats(spec.mean)}")
    if spec.std is not None:
        options.append(f"std={_format_floats(spec.std)}")
    return PREFIX + str(spec.root) + ("?" + "&".join(options) if options else "")


def imagefolder_name(root: Union[str, Path], image_size=None, mean=None, std=None) -> str:
    """The dataset name of folder ``root`` with the given options (None: default), e.g. from CLI flags.

    ``image_size``: N, 'N', 'HxW' or (H, W); ``mean``/``std``: numbers or a comma-separated string.
    """
    spec = ImageFolderSpec(Path(root).expanduser(),
                           None if image_size is None else parse_size(image_size),
                           None if mean is None else parse_floats(mean, "mean"),
                           None if std is None else _check_std(parse_floats(std, "std"), str(root)))
    return format_imagefolder_name(spec)


def with_image_options(name: str, image_size=None, mean=None, std=None) -> str:
    """``name`` with the options given here (e.g. ``--image-size``, ``--mean``, ``--std``) set in it.

    Options given here replace the name's own. A built-in name is returned unchanged when no option
    is given, and is a UserError otherwise (their size and normalisation are fixed).
    """
    if image_size is None and mean is None and std is None:
        return name
    if not is_imagefolder_name(name):
        raise UserError(f"--image-size, --mean and --std apply to imagefolder:DIR datasets only, not {name!r}")
    spec = parse_imagefolder_name(name)
    return imagefolder_name(spec.root, image_size if image_size is not None else spec.size,
                            mean if mean is not None else spec.mean, std if std is not None else spec.std)


def check_imagefolder_name(name: str) -> str:
    """``name`` when it parses and its folder exists (the images are not read); else a UserError."""
    spec = parse_imagefolder_name(name)
    if not spec.root.is_dir():
        raise UserError(f"image folder {spec.root} does not exist or is not a folder; {LAYOUT_HINT}")
    return name


# ----------------------------------------------------------------------------------------------- files


def _is_image(filename: str) -> bool:
    return not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS)


def _class_folders(split_dir: Path) -> List[str]:
    try:
        return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    except OSError as err:
        raise UserError(f"image folder {split_dir} cannot be listed ({err.strerror or err})") from None


def _image_files(class_dir: Path) -> List[Path]:
    """The images under ``class_dir`` in torchvision's order: folders sorted by path, files by name."""
    found = []
    for folder, subfolders, filenames in os.walk(class_dir, followlinks=True):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found.append((folder, sorted(f for f in filenames if _is_image(f))))
    return [Path(folder) / f for folder, filenames in sorted(found) for f in filenames]


@dataclass(frozen=True)
class Listing:
    """The classes and files of an image folder (hashable: the key of the decode caches)."""

    root: Path
    classes: Tuple[str, ...]
    splits: Tuple[Tuple[str, SplitFiles], ...]  # ('train', ...), ('val', ...) when DIR/val exists, ('test', ...)

    def files(self, split: str) -> SplitFiles:
        return dict(self.splits)[split]

    @property
    def has_val(self) -> bool:
        return any(split == "val" for split, _ in self.splits)


def _split_classes(root: Path, split: str) -> List[str]:
    split_dir = root / split
    classes = _class_folders(split_dir)
    if not classes:
        loose = sum(1 for e in os.scandir(split_dir) if e.is_file() and _is_image(e.name))
        detail = f" (its {loose} images directly inside must go into class folders)" if loose else ""
        raise UserError(f"image folder {split_dir} has no class folders{detail}; {LAYOUT_HINT}")
    return classes


def list_folder(root: Path) -> Listing:
    """The classes and files of the image folder ``root``; every layout problem is a UserError."""
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist or is not a folder; {LAYOUT_HINT}")
    present = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    for split in ("train", "test"):
        if split not in present:
            raise UserError(f"image folder {root} has no {split!r} folder; {LAYOUT_HINT}")
    classes = _split_classes(root, "train")
    for split in present[1:]:
        other = _split_classes(root, split)
        if other != classes:
            extra, missing = sorted(set(other) - set(classes)), sorted(set(classes) - set(other))
            detail = "; ".join(filter(None, [
                f"{root / split} has class folders {', '.join(extra)} that {root / 'train'} lacks" if extra else "",
                f"{root / split} lacks the class folders {', '.join(missing)} of {root / 'train'}" if missing else ""]))
            raise UserError(f"{detail}: every split of an image folder needs the same class folders")
    splits = []
    for split in present:
        files = []
        for label, name in enumerate(classes):
            images = _image_files(root / split / name)
            if not images:
                raise UserError(f"class folder {root / split / name} holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder from every split")
            try:
                files.extend((file_key(path), label) for path in images)
            except OSError as err:
                raise UserError(f"image {err.filename} cannot be read ({err.strerror or err})") from None
        splits.append((split, tuple(files)))
    return Listing(root, tuple(classes), tuple(splits))


def files_digest(listing: Listing) -> str:
    """``sha256:...`` of every file's path (relative to the folder) and size, in sample order per split."""
    digest = hashlib.sha256()
    for split, files in listing.splits:
        for (path, size, _), _label in files:
            digest.update(f"{Path(path).relative_to(listing.root).as_posix()}\t{size}\n".encode())
    return "sha256:" + digest.hexdigest()


# ----------------------------------------------------------------------------------------------- decoding


def _unreadable(path, err) -> UserError:
    detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return UserError(f"image {path} cannot be read ({detail}); replace or delete the file")


@lru_cache(maxsize=8)
def _headers(listing: Listing) -> Tuple[str, Size]:
    """('L' when every image is grayscale, else 'RGB'; (H, W) of the first training image), from headers only."""
    gray = True
    first = None
    for _, files in listing.splits:
        for (path, _, _), _label in files:
            try:
                with Image.open(path) as image:
                    gray = gray and image.mode in GRAYSCALE_MODES
                    first = first or (image.height, image.width)
            except _DECODE_ERRORS as err:
                raise _unreadable(path, err) from None
    return ("L" if gray else "RGB"), first


def _decode_image(path: str, mode: str, size: Size) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3), converted to ``mode`` and resized to ``size``."""
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16"):  # 16-bit grayscale: keep the top 8 bits (PIL would clip)
                image = Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8), "L")
            image = image.convert(mode)
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except _DECODE_ERRORS as err:
        raise _unreadable(path, err) from None


@lru_cache(maxsize=6)
def decode_split(files: SplitFiles, mode: str, size: Size) -> Tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels (N,) of one split (cached: treat as read-only)."""
    channels = 1 if mode == "L" else 3
    images = np.empty((len(files), size[0], size[1], channels), np.uint8)
    for i, ((path, _, _), _label) in enumerate(files):
        images[i] = _decode_image(path, mode, size).reshape(size[0], size[1], channels)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


@lru_cache(maxsize=8)
def _statistics(files: SplitFiles, mode: str, size: Size) -> Tuple[Floats, Floats]:
    """Per-channel population mean and std of the images of ``files`` scaled to [0, 1] (exact integer sums)."""
    images, _ = decode_split(files, mode, size)
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.int64)
    squares = torch.zeros(channels, dtype=torch.int64)
    for chunk in images.split(256):
        x = chunk.to(torch.int64).transpose(0, 1).reshape(channels, -1)
        total += x.sum(1)
        squares += (x * x).sum(1)
    n = images.numel() // channels
    mean = total.double() / n
    std = (squares.double() / n - mean * mean).clamp_min(0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


# ----------------------------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class ImageFolderData:
    """An image folder with its options resolved: :attr:`info`, the splits and the provenance record."""

    spec: ImageFolderSpec  # as given, the root made absolute
    listing: Listing
    mode: str
    size: Size
    mean: Floats
    std: Floats
    normalization_source: str  # 'computed', 'given' or 'partly given'

    @property
    def name(self) -> str:
        """The canonical name: absolute folder, size always, mean/std when given."""
        return format_imagefolder_name(ImageFolderSpec(self.spec.root, self.size, self.spec.mean, self.spec.std))

    @property
    def info(self) -> DatasetInfo:
        label = re.sub(r"[^A-Za-z0-9._-]+", "_", self.spec.root.name) or "root"
        tag = hashlib.sha256(self.name.encode()).hexdigest()[:8]
        return DatasetInfo(self.name, f"ImageFolder-{label}-{tag}", len(self.listing.classes),
                           1 if self.mode == "L" else 3, self.size,
                           normalization=(self.mean, self.std), class_names=self.listing.classes)

    @property
    def has_val(self) -> bool:
        return self.listing.has_val

    def official(self, train: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels of all of ``DIR/train`` (``train=True``) or of ``DIR/test``."""
        return decode_split(self.listing.files("train" if train else "test"), self.mode, self.size)

    def val_folder(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels of ``DIR/val`` (only when it exists)."""
        return decode_split(self.listing.files("val"), self.mode, self.size)

    def describe(self) -> Dict:
        """A JSON-able record of what the data were."""
        info = self.info
        return {
            "name": info.name, "display_name": info.display_name, "kind": "imagefolder",
            "path": str(self.spec.root), "image_size": list(self.size), "mode": self.mode,
            "n_classes": info.n_classes, "n_channels": info.n_channels, "input_size": list(info.input_size),
            "mean": list(self.mean), "std": list(self.std), "normalization_source": self.normalization_source,
            "classes": list(self.listing.classes),
            "samples": {split: len(files) for split, files in self.listing.splits},
            "val_folder": self.has_val, "files_digest": files_digest(self.listing),
        }


def _per_channel(values: Floats, channels: int, what: str, root: Path) -> Floats:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise UserError(f"{what} has {len(values)} values but the images of {root} have {channels} channel(s); "
                        f"give one value per channel, or one for all")
    return values


def load_imagefolder(name: str) -> ImageFolderData:
    """The image folder of dataset name ``name``: listed now, decoded once per process (cached)."""
    spec = parse_imagefolder_name(name)
    spec = ImageFolderSpec(spec.root.resolve(), spec.size, spec.mean, spec.std)
    listing = list_folder(spec.root)
    mode, first_size = _headers(listing)
    size = spec.size or first_size
    channels = 1 if mode == "L" else 3
    for _, files in listing.splits:  # every split now: a bad test image must not surface after hours of training
        decode_split(files, mode, size)
    mean = None if spec.mean is None else _per_channel(spec.mean, channels, "mean", spec.root)
    std = None if spec.std is None else _per_channel(spec.std, channels, "std", spec.root)
    if mean is None or std is None:
        computed_mean, computed_std = _statistics(listing.files("train"), mode, size)
        mean = computed_mean if mean is None else mean
        if std is None:
            if min(computed_std) == 0:
                raise UserError(f"the training images of {spec.root / 'train'} are constant in a channel (std 0), so "
                                f"they cannot be normalised by their std; give std=... in the name")
            std = computed_std
    source = "given" if spec.mean is not None and spec.std is not None else \
        "computed" if spec.mean is None and spec.std is None else "partly given"
    return ImageFolderData(spec, listing, mode, size, mean, std, source)


def imagefolder_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of an ``imagefolder:`` name (lists the folder; decodes it once per process)."""
    return load_imagefolder(name).info
