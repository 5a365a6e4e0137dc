"""Benchmark: LeNet training epochs on Fashion-MNIST, batched tensor loader vs per-sample PIL loader.

(a) ours: ``src.data.get_loader('fashion', 'train')``, uint8 tensors in memory, batched affine
    augmentation with affine_grid/grid_sample.
(b) baseline: a torchvision-style Dataset yielding PIL images through the reference's per-sample
    transforms, fed through ``torch.utils.data.DataLoader`` with num_workers 0 and 2.

Same LeNet, batch size, optimiser and training split (55000 samples) for all; timed in this
process. Usage::

    .venv/bin/python benchmarks/bench_loader.py [--epochs 1] [--max-samples N]
"""
import argparse
import sys
import time
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.config import get_config  # noqa: E402
from src.data import NORMALIZATION, get_loader  # noqa: E402
from src.models import create_model  # noqa: E402
from src.data.idx import read_idx  # noqa: E402
from src.data.mnist_like import IMAGE_FILES, LABEL_FILES, locate_files  # noqa: E402
from src.data.splits import split_indices  # noqa: E402

(MEAN,), (STD,) = NORMALIZATION["fashion"]


class PILFashionMNIST(Dataset):
    """torchvision.datasets-style: 28x28 uint8 images handed to the transform as PIL images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


REFERENCE_TRANSFORM = T.Compose([
    T.Resize((32, 32)),
    T.Pad(4, padding_mode="edge"),
    T.RandomAffine(5, scale=(0.9, 1.1), shear=5, fill=0),
    T.CenterCrop(32),
    T.ToTensor(),
    T.Normalize((MEAN,), (STD,)),
])


def baseline_dataset(max_samples: Optional[int]) -> PILFashionMNIST:
    """The same training split as ``get_loader('fashion', 'train')``, as raw 28x28 images."""
    files = locate_files("fashion", get_config())
    images, labels = read_idx(files[IMAGE_FILES[True]]), read_idx(files[LABEL_FILES[True]])
    indices = split_indices(len(labels), "train", 5000).numpy()[:max_samples]
    return PILFashionMNIST(images[indices], labels[indices], REFERENCE_TRANSFORM)


def train_epoch(batches: Iterable, seed: int) -> float:
    """Seconds for one SGD epoch of a fresh LeNet over ``batches``."""
    torch.manual_seed(seed)
    model = create_model("lenet", n_classes=10, n_channels=1, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed per loader (default 1)")
    parser.add_argument("--max-samples", type=int, default=None, help="shorten the epoch to the first N samples")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    ours = get_loader("fashion", "train", args.batch_size, seed=args.seed, max_samples=args.max_samples)
    print(f"ours: {ours.num_samples} samples loaded in {time.perf_counter() - start:.2f} s "
          f"(read, decode, resize; torch threads: {torch.get_num_threads()})")
    dataset = baseline_dataset(args.max_samples)

    results: List[tuple] = [("ours (BatchLoader, batched affine)", [train_epoch(ours, args.seed) for _ in range(args.epochs)])]
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(args.seed))
        times = [train_epoch(loader, args.seed) for _ in range(args.epochs)]
        results.append((f"per-sample PIL, DataLoader num_workers={workers}", times))

    ours_time = float(np.mean(results[0][1]))
    print(f"\nLeNet, batch {args.batch_size}, {ours.num_samples} samples, {args.epochs} epoch(s) each; seconds per epoch:")
    for name, times in results:
        mean = float(np.mean(times))
        ratio = "" if name.startswith("ours") else f"   baseline/ours = {mean / ours_time:.1f}x"
        print(f"  {name:<45} {mean:7.2f} s{ratio}")


if __name__ == "__main__":
    main()
