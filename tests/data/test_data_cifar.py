"""CIFAR-10 / CIFAR-100 from tiny pickles in torchvision's layout."""
import pickle

import numpy as np
import pytest
import torch

from src.data import get_loader, load_split
from src.data import cifar
from src.errors import UserError
from tests.data_fixtures import make_config, write_cifar

NORMS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
         "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_test_split_matches_to_tensor_normalize(tmp_path, name):
    written = write_cifar(tmp_path, name)
    loader = get_loader(name, "test", batch_size=8, config=make_config(tmp_path, dataset_root=tmp_path))
    assert loader.info.n_classes == (10 if name == "cifar10" else 100)
    x, y = map(torch.cat, zip(*loader))
    # rows of 3072 bytes are channel-major planes: R (1024), G, B
    images = written["test_data"].reshape(-1, 3, 32, 32) / 255.0
    mean, std = (np.array(v).reshape(1, 3, 1, 1) for v in NORMS[name])
    torch.testing.assert_close(x, torch.from_numpy((images - mean) / std).float(), atol=1e-5, rtol=0)
    assert y.dtype == torch.int64 and y.tolist() == written["test_labels"].tolist()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_train_reads_every_batch_file(tmp_path, name):
    written = write_cifar(tmp_path, name)
    config = make_config(tmp_path, dataset_root=tmp_path)
    split = load_split(name, "train", val_size=0, config=config)
    assert split.images.dtype == torch.uint8 and split.images.shape == (150, 3, 32, 32)
    np.testing.assert_array_equal(split.images.reshape(150, -1).numpy(), written["train_data"])
    assert split.targets.tolist() == written["train_labels"].tolist()


def test_python3_pickles_with_str_keys(tmp_path):
    written = write_cifar(tmp_path, "cifar100")
    path = tmp_path / "cifar-100-python" / "test"
    with open(path, "wb") as f:
        pickle.dump({"data": written["test_data"], "fine_labels": written["test_labels"].tolist()}, f)
    split = load_split("cifar100", "test", config=make_config(tmp_path, dataset_root=tmp_path))
    assert split.targets.tolist() == written["test_labels"].tolist()


def test_missing_files_name_folder_key_and_download(tmp_path):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError) as err:
        load_split("cifar10", "test", config=make_config(tmp_path, dataset_root=tmp_path))
    message = str(err.value)
    for needle in (str(tmp_path / "cifar-10-batches-py"), "data_batch_3", "DATASET_ROOT", "--download"):
        assert needle in message


@pytest.mark.parametrize("content", [b"", b"garbage that is not a pickle", "truncate"])
def test_corrupt_pickle_names_the_file(tmp_path, content):
    write_cifar(tmp_path, "cifar100")
    path = tmp_path / "cifar-100-python" / "test"
    path.write_bytes(path.read_bytes()[:100] if content == "truncate" else content)
    with pytest.raises(UserError, match=r"cifar-100-python/test is a corrupt or truncated pickle"):
        load_split("cifar100", "test", config=make_config(tmp_path, dataset_root=tmp_path))


def test_wrong_content_names_the_file(tmp_path):
    write_cifar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, f)
    with pytest.raises(UserError, match="test_batch: labels must lie in 0..9"):
        load_split("cifar10", "test", config=make_config(tmp_path, dataset_root=tmp_path))
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(UserError, match="test_batch has no 'labels' entry"):
        load_split("cifar10", "test", config=make_config(tmp_path, dataset_root=tmp_path))


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, train, download))
        write_cifar(tmp_path / "dl", "cifar10")

    monkeypatch.setitem(cifar.TORCHVISION_CLASSES, "cifar10", fake_cifar10)
    split = load_split("cifar10", "test", download=True, config=make_config(tmp_path, dataset_root=tmp_path / "dl"))
    assert calls == [(str(tmp_path / "dl"), True, True)] and len(split) == 20


def test_crop_flip_augmentation_on_train_batches(tmp_path):
    """Augmented train samples are crops (zero padding 4) of their image, some flipped, some shifted."""
    written = write_cifar(tmp_path, "cifar10")
    config = make_config(tmp_path, dataset_root=tmp_path)
    x, _ = next(iter(get_loader("cifar10", "train", batch_size=24, shuffle=False, val_size=0, config=config)))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMS["cifar10"])
    pixels = (x * std + mean) * 255
    padded = np.pad(written["train_data"][:24].reshape(-1, 3, 32, 32), ((0, 0), (0, 0), (4, 4), (4, 4)))
    flips = shifts = 0
    for i in range(24):
        matches = [(t, l_, f) for t in range(9) for l_ in range(9) for f in (False, True)
                   if np.allclose(pixels[i].numpy(), np.flip(padded[i, :, t:t + 32, l_:l_ + 32], -1) if f
                                  else padded[i, :, t:t + 32, l_:l_ + 32], atol=1e-3)]
        assert matches, f"train sample {i} is not a crop of its padded image"
        flips += any(f for _, _, f in matches)
        shifts += any((t, l_) != (4, 4) for t, l_, _ in matches)
    assert 3 <= flips <= 21 and shifts >= 12
