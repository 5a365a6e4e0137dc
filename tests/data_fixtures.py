"""Helpers for the src.data tests: tiny dataset files in the real on-disk formats, and configs.

Every writer here is independent of src.data (struct/pickle/PIL/csv from scratch), so the tests
check the readers against the formats, not against themselves.
"""
import csv
import gzip
import pickle
import struct
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from src.config import Config

IDX_TYPE_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
                  np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
MNIST_STEMS = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
CELEBA_ATTRIBUTES = [f"attr_{i:02d}" for i in range(40)]


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: zero, zero, type code, ndim, big-endian sizes, big-endian data."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = struct.pack(">BBBB", 0, 0, IDX_TYPE_CODES[big_endian.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + big_endian.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_config(tmp_path: Path, dataset_root: Optional[Path] = None, celeba_root: Optional[Path] = None,
                fashion_mnist_dir: Optional[Path] = None) -> Config:
    """A Config whose data paths default to (empty or absent) folders inside ``tmp_path``."""
    return Config(
        dataset_root=dataset_root or tmp_path / "no_datasets",
        celeba_root=celeba_root or tmp_path / "no_celeba",
        fashion_mnist_dir=fashion_mnist_dir or tmp_path / "no_fashion",
        results_dir=tmp_path / "results",
        snapshots_dir=tmp_path / "snapshots",
        device="cpu",
        source=tmp_path / "test.env",
    )


def fake_mnist_arrays(n_train: int = 40, n_test: int = 12, seed: int = 0) -> Dict[str, np.ndarray]:
    """Random 28x28 uint8 images with a zero 3-pixel border, and labels 0..9."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 3:-3, 3:-3] = rng.integers(0, 256, (n, 22, 22))
        arrays[f"{part}_images"] = images
        arrays[f"{part}_labels"] = rng.integers(0, 10, n).astype(np.uint8)
    return arrays


def write_mnist_folder(folder: Path, arrays: Dict[str, np.ndarray], gz: bool = False) -> Path:
    """The four IDX files of ``arrays`` (from :func:`fake_mnist_arrays`) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in MNIST_STEMS.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key], gz)
    return folder


def pil_resize_32(images: np.ndarray) -> np.ndarray:
    """PIL's bilinear resize of each 28x28 image to 32x32, as the reference's Resize((32, 32)) did."""
    return np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in images])


def index_images(n: int, offset: int = 0) -> np.ndarray:
    """CIFAR rows (n, 3072) whose first two bytes encode the sample number; the rest is noise."""
    rng = np.random.default_rng(n + offset)
    data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    numbers = np.arange(offset, offset + n)
    data[:, 0], data[:, 1] = numbers % 256, numbers // 256
    return data


def decode_index(images: np.ndarray) -> np.ndarray:
    """Inverse of :func:`index_images` on (N, 3, 32, 32) images."""
    flat = images.reshape(len(images), -1).astype(np.int64)
    return flat[:, 0] + 256 * flat[:, 1]


def write_cifar(root: Path, name: str, n_train: int = 150, n_test: int = 20) -> Dict[str, np.ndarray]:
    """A tiny CIFAR-10 (train in 5 batch files) or CIFAR-100 in torchvision's layout under ``root``.

    Image rows come from :func:`index_images` (train samples numbered 0.., test samples 10000..).
    Returns ``train_data``/``train_labels``/``test_data``/``test_labels`` in file order.
    """
    if name == "cifar10":
        folder, n_classes, label_key = root / "cifar-10-batches-py", 10, b"labels"
        train_stems, test_stem = [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
    else:
        folder, n_classes, label_key = root / "cifar-100-python", 100, b"fine_labels"
        train_stems, test_stem = ["train"], "test"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = {"train_data": index_images(n_train), "train_labels": rng.integers(0, n_classes, n_train),
           "test_data": index_images(n_test, offset=10000), "test_labels": rng.integers(0, n_classes, n_test)}
    chunks = np.array_split(np.arange(n_train), len(train_stems))
    files = [(stem, out["train_data"][c], out["train_labels"][c]) for stem, c in zip(train_stems, chunks)]
    files.append((test_stem, out["test_data"], out["test_labels"]))
    for stem, data, labels in files:
        batch = {b"batch_label": stem.encode(), b"data": data, label_key: labels.tolist()}
        with open(folder / stem, "wb") as f:
            pickle.dump(batch, f)
    return out


def write_celeba(root: Path, n_train: int = 8, n_test: int = 3) -> Dict[str, Tuple[list, np.ndarray]]:
    """Tiny RGB PNGs of varying sizes in ``root/images`` and train.csv/test.csv of -1/+1 attributes.

    Returns, per CSV, the list of image paths and the (N, 40) array of -1/+1 attributes.
    """
    rng = np.random.default_rng(2)
    (root / "images").mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        attributes = rng.choice([-1, 1], size=(n, 40))
        names = []
        for i in range(n):
            name = f"images/{part}_{i:03d}.png"
            pixels = rng.integers(0, 256, (30 + i, 24 + 2 * i, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(root / name)
            names.append(name)
        with open(root / f"{part}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["img"] + CELEBA_ATTRIBUTES)
            for name, row in zip(names, attributes):
                writer.writerow([name] + row.tolist())
        out[part] = ([root / name for name in names], attributes)
    return out


def make_image_folder(root: Path, classes: int = 3, train: int = 20, test: int = 10, size: int = 32, seed: int = 0,
                      val: int = 0, mode: str = "RGB") -> Path:
    """A small image folder for ``imagefolder:ROOT``: ``ROOT/{train,test}[/val]/class_XX/NNN.png``.

    ``train``/``test``/``val`` PNGs per class (no val folder when ``val=0``), ``size`` x ``size``,
    ``mode`` 'RGB' or 'L'. Each class has its own base colour (evenly spread hues) plus uniform
    noise of +-40, so a linear model learns the classes in a few steps. Written with PIL from
    numpy, independently of src.data. Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    levels = [60 + 140 * c / max(classes - 1, 1) for c in range(classes)]
    base = [np.array([levels[(c + k) % classes] for k in range(3)]) for c in range(classes)]
    for split, n in (("train", train), ("val", val), ("test", test)):
        if n == 0:
            continue
        for c in range(classes):
            folder = Path(root) / split / f"class_{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(base[c] + rng.integers(-40, 41, (size, size, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels, "RGB")
                (image.convert("L") if mode == "L" else image).save(folder / f"{i:03d}.png")
    return Path(root)
