"""BatchLoader behaviour: determinism, epochs, defaults, sizes, augmentation on/off, errors."""
import pytest
import torch

from src.data import DATASET_NAMES, dataset_info, get_loader, load_split
from src.errors import UserError
from tests.data_fixtures import decode_index, fake_mnist_arrays, make_config, write_cifar, write_mnist_folder


@pytest.fixture
def cifar_config(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=100)
    return make_config(tmp_path, dataset_root=tmp_path)


@pytest.fixture
def mnist_config(tmp_path):
    write_mnist_folder(tmp_path / "MNIST" / "raw", fake_mnist_arrays(n_train=50))
    return make_config(tmp_path, dataset_root=tmp_path)


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_same_seed_same_batches_epoch_after_epoch(name, cifar_config, mnist_config):
    config = cifar_config if name == "cifar10" else mnist_config
    make = lambda seed: get_loader(name, "train", batch_size=16, val_size=10, seed=seed, config=config)  # noqa: E731
    a, b, c = make(7), make(7), make(8)
    a1, a2 = _epoch(a), _epoch(a)
    assert _same(a1, _epoch(b)) and _same(a2, _epoch(b)), "same seed: same batches in every epoch"
    assert not _same(a1, a2), "each pass continues the generator: a new order and new augmentations"
    assert not _same(a1, _epoch(c)), "another seed: other batches"


def test_every_sample_once_per_epoch(cifar_config):
    loader = get_loader("cifar10", "train", batch_size=16, val_size=20, augment=False, seed=3, config=cifar_config)
    expected = sorted(decode_index(load_split("cifar10", "train", val_size=20, config=cifar_config).images.numpy()))
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
    std = torch.tensor((0.2023, 0.1994, 0.2010)).view(1, 3, 1, 1)
    orders = []
    for _ in range(2):
        x = torch.cat([x for x, _ in loader])
        numbers = decode_index(torch.round((x * std + mean) * 255).to(torch.uint8).numpy())
        assert sorted(numbers) == expected
        orders.append(list(numbers))
    assert orders[0] != orders[1] and orders[0] != expected


def test_lengths_and_drop_last(cifar_config):
    loader = get_loader("cifar10", "train", batch_size=32, val_size=20, config=cifar_config)
    assert loader.num_samples == 80 and len(loader) == 3 and len(list(loader)) == 3
    dropped = get_loader("cifar10", "train", batch_size=32, val_size=20, drop_last=True, config=cifar_config)
    assert len(dropped) == 2 and [len(x) for x, _ in dropped] == [32, 32]


def test_defaults_shuffle_and_augment_only_for_train(cifar_config):
    train = get_loader("cifar10", "train", val_size=20, config=cifar_config)
    val = get_loader("cifar10", "val", val_size=20, config=cifar_config)
    test = get_loader("cifar10", "test", val_size=20, config=cifar_config)
    assert (train.shuffle, train.augment) == (True, True)
    assert (val.shuffle, val.augment, test.shuffle, test.augment) == (False,) * 4


@pytest.mark.parametrize("split", ["val", "test"])
def test_no_augmentation_for_eval_splits(split, mnist_config):
    """Eval batches are exactly the normalised stored images, in order, every pass."""
    stored = load_split("mnist", split, val_size=10, config=mnist_config)
    loader = get_loader("mnist", split, batch_size=4, val_size=10, config=mnist_config)
    for _ in range(2):
        x, y = map(torch.cat, zip(*loader))
        torch.testing.assert_close(x, (stored.images.float() / 255 - 0.1307) / 0.3081, atol=1e-5, rtol=0)
        assert torch.equal(y, stored.targets)


def test_affine_augmentation_on_train(mnist_config):
    plain = torch.cat([x for x, _ in get_loader("mnist", "train", val_size=10, augment=False, shuffle=False, config=mnist_config)])
    loader = get_loader("mnist", "train", val_size=10, shuffle=False, config=mnist_config)
    x, y = map(torch.cat, zip(*loader))
    assert x.shape == plain.shape == (40, 1, 32, 32) and torch.isfinite(x).all()
    assert not torch.equal(x, plain)
    lo, hi = -0.1307 / 0.3081, (1 - 0.1307) / 0.3081
    assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5


def test_max_samples_keeps_the_first_samples(cifar_config):
    full = load_split("cifar10", "test", config=cifar_config)
    loader = get_loader("cifar10", "test", batch_size=4, max_samples=6, config=cifar_config)
    assert loader.num_samples == 6 and len(loader) == 2
    assert torch.equal(torch.cat([y for _, y in loader]), full.targets[:6])
    assert get_loader("cifar10", "test", max_samples=10**6, config=cifar_config).num_samples == 20


def test_loader_leaves_the_global_rng_alone(mnist_config):
    state = torch.get_rng_state()
    for _ in get_loader("mnist", "train", batch_size=8, val_size=10, config=mnist_config):
        pass
    assert torch.equal(state, torch.get_rng_state())


def test_device_attribute(cifar_config):
    loader = get_loader("cifar10", "test", device="cpu", config=cifar_config)
    assert loader.device == torch.device("cpu") and next(iter(loader))[0].device.type == "cpu"


def test_dataset_table():
    assert DATASET_NAMES == ("mnist", "fashion", "cifar10", "cifar100", "celeba")
    table = {n: (dataset_info(n).display_name, dataset_info(n).n_classes, dataset_info(n).n_channels,
                 dataset_info(n).input_size, dataset_info(n).multilabel) for n in DATASET_NAMES}
    assert table == {"mnist": ("MNIST", 10, 1, (32, 32), False), "fashion": ("FashionMNIST", 10, 1, (32, 32), False),
                     "cifar10": ("CIFAR10", 10, 3, (32, 32), False), "cifar100": ("CIFAR100", 100, 3, (32, 32), False),
                     "celeba": ("CelebA", 40, 3, (224, 224), True)}


@pytest.mark.parametrize("call,pattern", [
    (lambda c: dataset_info("imagenet"), "unknown dataset 'imagenet'; valid names: mnist, fashion, cifar10, cifar100, celeba"),
    (lambda c: get_loader("svhn", "train", config=c), "unknown dataset 'svhn'"),
    (lambda c: get_loader("cifar10", "training", config=c), "unknown split 'training'; valid splits: train, val, test"),
    (lambda c: get_loader("cifar10", "test", batch_size=0, config=c), "batch_size must be an integer >= 1"),
    (lambda c: get_loader("cifar10", "test", max_samples=0, config=c), "max_samples must be an integer >= 1"),
    (lambda c: get_loader("cifar10", "test", num_workers=-1, config=c), "num_workers must be an integer >= 0"),
    (lambda c: get_loader("cifar10", "test", seed="1", config=c), "seed must be an integer >= 0, got '1'"),
    (lambda c: get_loader("cifar10", "test", device="tpu9", config=c), "DEVICE='tpu9' is not a device name"),
])
def test_user_errors(cifar_config, call, pattern):
    with pytest.raises(UserError, match=pattern.replace("(", r"\(").replace(")", r"\)")):
        call(cifar_config)


def test_augmentation_does_not_write_into_the_cached_tensors(mnist_config):
    """'test' is the decoded tensor itself (no index copy): augmenting it must leave it unchanged."""
    before = load_split("mnist", "test", config=mnist_config).images.clone()
    list(get_loader("mnist", "test", augment=True, shuffle=True, config=mnist_config))
    assert torch.equal(load_split("mnist", "test", config=mnist_config).images, before)
