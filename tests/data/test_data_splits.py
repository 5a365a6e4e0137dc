"""The fixed train/val split: sizes, disjointness, independence of the seed, coverage."""
import numpy as np
import pytest
import torch

from src.data import get_loader, load_split
from src.data.splits import train_val_indices
from src.errors import UserError
from tests.data_fixtures import decode_index, make_config, write_cifar


@pytest.fixture
def cifar_config(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=300)
    return make_config(tmp_path, dataset_root=tmp_path)


def _numbers(split):
    return decode_index(split.images.numpy())


def test_train_val_partition_the_official_train_set(cifar_config):
    train = load_split("cifar10", "train", val_size=50, config=cifar_config)
    val = load_split("cifar10", "val", val_size=50, config=cifar_config)
    test = load_split("cifar10", "test", val_size=50, config=cifar_config)
    assert (len(train), len(val), len(test)) == (250, 50, 20)
    train_numbers, val_numbers = _numbers(train), _numbers(val)
    assert not set(train_numbers) & set(val_numbers)
    assert sorted(np.concatenate([train_numbers, val_numbers])) == list(range(300))
    assert all(n >= 10000 for n in _numbers(test))


def test_val_does_not_depend_on_the_loader_seed(cifar_config):
    mean = np.array((0.4914, 0.4822, 0.4465)).reshape(1, 3, 1, 1)
    std = np.array((0.2023, 0.1994, 0.2010)).reshape(1, 3, 1, 1)

    def val_numbers(seed):
        loader = get_loader("cifar10", "val", val_size=40, seed=seed, shuffle=True, config=cifar_config)
        x = torch.cat([x for x, _ in loader]).numpy()
        return set(decode_index(np.rint((x * std + mean) * 255).astype(np.uint8)))

    expected = set(_numbers(load_split("cifar10", "val", val_size=40, config=cifar_config)))
    assert val_numbers(0) == val_numbers(1) == val_numbers(12345) == expected


def test_val_is_spread_over_the_train_set_and_keeps_order():
    train, val = train_val_indices(1000, 100)
    assert len(train) == 900 and len(val) == 100
    assert torch.equal(val, val.sort().values) and torch.equal(train, train.sort().values)
    assert val.min() < 200 and val.max() > 800, "val is a random subset, not a block"
    smaller = train_val_indices(1000, 30)[1]
    assert set(smaller.tolist()) <= set(val.tolist())


def test_val_size_zero_means_no_val(cifar_config):
    assert len(load_split("cifar10", "train", val_size=0, config=cifar_config)) == 300
    with pytest.raises(UserError, match="split 'val' needs val_size > 0"):
        get_loader("cifar10", "val", val_size=0, config=cifar_config)


@pytest.mark.parametrize("val_size", [-1, 300, 301, 2.5, "10"])
def test_bad_val_size(cifar_config, val_size):
    with pytest.raises(UserError, match="val_size must be an integer in 0..299"):
        load_split("cifar10", "train", val_size=val_size, config=cifar_config)


def test_default_val_size_is_5000(tmp_path):
    """The real sizes are checked on Fashion-MNIST; here: too small a train set for the default is a clear error."""
    write_cifar(tmp_path, "cifar10", n_train=300)
    with pytest.raises(UserError, match="val_size must be an integer in 0..299.*got 5000"):
        load_split("cifar10", "val", config=make_config(tmp_path, dataset_root=tmp_path))
