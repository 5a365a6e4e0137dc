"""MNIST / Fashion-MNIST from tiny fake IDX files in torchvision's and Debian's layouts."""
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from src.data import get_loader, load_split
from src.data import mnist_like
from src.errors import UserError
from tests.data_fixtures import fake_mnist_arrays, make_config, pil_resize_32, write_idx, write_mnist_folder

MEAN, STD = 0.1307, 0.3081


def _expected(images_28: np.ndarray) -> torch.Tensor:
    """Reference eval transform, computed independently: PIL resize, ToTensor, Normalize."""
    return torch.from_numpy((pil_resize_32(images_28) / 255.0 - MEAN) / STD).float().unsqueeze(1)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_test_split_matches_reference_transform(tmp_path, gz):
    arrays = fake_mnist_arrays()
    write_mnist_folder(tmp_path / "data" / "MNIST" / "raw", arrays, gz)
    loader = get_loader("mnist", "test", batch_size=5, config=make_config(tmp_path, dataset_root=tmp_path / "data"))
    assert len(loader) == 3 and loader.num_samples == 12 and loader.batch_size == 5
    assert loader.info.name == "mnist" and loader.info.n_channels == 1
    xs, ys = zip(*loader)
    assert [len(x) for x in xs] == [5, 5, 2]
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and x.shape == (12, 1, 32, 32) and y.dtype == torch.int64
    torch.testing.assert_close(x, _expected(arrays["test_images"]), atol=1e-5, rtol=0)
    assert y.tolist() == arrays["test_labels"].tolist()


def test_load_split_resizes_like_pil_and_keeps_uint8(tmp_path):
    arrays = fake_mnist_arrays()
    write_mnist_folder(tmp_path / "MNIST" / "raw", arrays)
    split = load_split("mnist", "test", config=make_config(tmp_path, dataset_root=tmp_path))
    assert split.images.dtype == torch.uint8 and split.images.shape == (12, 1, 32, 32)
    np.testing.assert_array_equal(split.images[:, 0].numpy(), pil_resize_32(arrays["test_images"]))
    assert len(split) == 12 and split.split == "test"


def test_fashion_prefers_dataset_root_then_debian_folder(tmp_path):
    debian = write_mnist_folder(tmp_path / "debian", fake_mnist_arrays(seed=1), gz=True)
    config = make_config(tmp_path, dataset_root=tmp_path / "root", fashion_mnist_dir=debian)
    labels = load_split("fashion", "test", config=config).targets.tolist()
    assert labels == fake_mnist_arrays(seed=1)["test_labels"].tolist()
    write_mnist_folder(tmp_path / "root" / "FashionMNIST" / "raw", fake_mnist_arrays(seed=2))
    labels = load_split("fashion", "test", config=config).targets.tolist()
    assert labels == fake_mnist_arrays(seed=2)["test_labels"].tolist()


def test_train_and_val_come_from_the_train_files(tmp_path):
    arrays = fake_mnist_arrays(n_train=40)
    write_mnist_folder(tmp_path / "MNIST" / "raw", arrays)
    config = make_config(tmp_path, dataset_root=tmp_path)
    train = load_split("mnist", "train", val_size=10, config=config)
    val = load_split("mnist", "val", val_size=10, config=config)
    assert len(train) == 30 and len(val) == 10
    resized = torch.from_numpy(pil_resize_32(arrays["train_images"]))
    rows = {tuple(image.flatten().tolist()) for image in resized}
    assert all(tuple(image.flatten().tolist()) in rows for image in torch.cat([train.images, val.images])[:, 0])


def test_missing_mnist_names_folder_key_and_download(tmp_path):
    config = make_config(tmp_path, dataset_root=tmp_path / "empty")
    with pytest.raises(UserError) as err:
        get_loader("mnist", "train", config=config)
    message = str(err.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "DATASET_ROOT" in message and "--download" in message and "\n" not in message


def test_missing_fashion_names_both_folders_keys_and_debian_package(tmp_path):
    config = make_config(tmp_path, dataset_root=tmp_path / "r", fashion_mnist_dir=tmp_path / "deb")
    with pytest.raises(UserError) as err:
        load_split("fashion", "test", config=config)
    message = str(err.value)
    for needle in (str(tmp_path / "r" / "FashionMNIST" / "raw"), str(tmp_path / "deb"), "DATASET_ROOT",
                   "FASHION_MNIST_DIR", "dataset-fashion-mnist", "--download"):
        assert needle in message


def test_incomplete_folder_is_not_used(tmp_path):
    folder = write_mnist_folder(tmp_path / "MNIST" / "raw", fake_mnist_arrays())
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="MNIST not found"):
        load_split("mnist", "test", config=make_config(tmp_path, dataset_root=tmp_path))


def test_corrupt_file_and_bad_labels_name_the_file(tmp_path):
    arrays = fake_mnist_arrays()
    folder = write_mnist_folder(tmp_path / "MNIST" / "raw", arrays)
    config = make_config(tmp_path, dataset_root=tmp_path)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.*truncated"):
        load_split("mnist", "test", config=config)
    write_idx(path, arrays["test_images"])
    write_idx(folder / "t10k-labels-idx1-ubyte", np.full(12, 10, np.uint8))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte has label 10"):
        load_split("mnist", "test", config=config)


class _FakeTorchvisionMNIST:
    """Stands in for torchvision.datasets.MNIST(download=True): writes the files it would fetch."""

    calls = []

    def __init__(self, root, train, download):
        self.calls.append((root, train, download))
        write_mnist_folder(Path(root) / "MNIST" / "raw", fake_mnist_arrays(), gz=False)


def test_download_goes_through_torchvision_into_dataset_root(tmp_path, monkeypatch):
    monkeypatch.setitem(mnist_like.TORCHVISION_CLASSES, "mnist", _FakeTorchvisionMNIST)
    _FakeTorchvisionMNIST.calls.clear()
    config = make_config(tmp_path, dataset_root=tmp_path / "dl")
    split = load_split("mnist", "test", download=True, config=config)
    assert _FakeTorchvisionMNIST.calls == [(str(tmp_path / "dl"), True, True)]
    assert split.targets.tolist() == fake_mnist_arrays()["test_labels"].tolist()
    load_split("mnist", "test", download=True, config=config)
    assert len(_FakeTorchvisionMNIST.calls) == 1, "files present: no second download"


def test_failed_download_is_a_user_error(tmp_path, monkeypatch):
    def offline(root, train, download):
        raise URLError("no network")

    monkeypatch.setitem(mnist_like.TORCHVISION_CLASSES, "fashion", offline)
    with pytest.raises(UserError, match="downloading FashionMNIST into .* failed"):
        load_split("fashion", "train", download=True, config=make_config(tmp_path))


def test_config_from_environment(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path / "MNIST" / "raw", fake_mnist_arrays())
    monkeypatch.setenv("DATASET_ROOT", str(tmp_path))
    assert load_split("mnist", "test").targets.tolist() == fake_mnist_arrays()["test_labels"].tolist()
