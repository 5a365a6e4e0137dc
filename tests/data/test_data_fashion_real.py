"""The real Fashion-MNIST from Debian's dataset-fashion-mnist package (skipped when absent)."""
import torch

from src.data import get_loader
from tests.data_fixtures import make_config


def test_real_fashion_mnist(tmp_path, fashion_available):
    config = make_config(tmp_path, fashion_mnist_dir=fashion_available)
    loaders = {split: get_loader("fashion", split, batch_size=1000, config=config) for split in ("train", "val", "test")}
    assert {s: loader.num_samples for s, loader in loaders.items()} == {"train": 55000, "val": 5000, "test": 10000}
    x, y = next(iter(loaders["test"]))
    assert x.shape == (1000, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10)) and loaders["test"].info.n_classes == 10
    # Normalised with Fashion-MNIST's own pixel statistics (mean 0.2860, std 0.3530 at 28x28).
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1.0) < 0.1
    x_train, _ = next(iter(loaders["train"]))
    assert x_train.shape == (1000, 1, 32, 32) and torch.isfinite(x_train).all()
