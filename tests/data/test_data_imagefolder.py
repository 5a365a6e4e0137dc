"""imagefolder:DIR: users' own images, checked against PIL/numpy/torchvision directly."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data import (DATASET_HELP, check_dataset_name, dataset_info, describe_dataset, get_loader, imagefolder_name,
                      load_split, with_image_options)
from src.data.splits import split_indices
from src.errors import UserError
from tests.data_fixtures import make_image_folder


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")


def name_of(root: Path, options: str = "") -> str:
    return f"imagefolder:{root}" + (f"?{options}" if options else "")


def pil_images(root: Path, split: str, mode: str = "RGB", size=None) -> np.ndarray:
    """(N, H, W, C) uint8 of every image of ``root/split``, classes and files in sorted order, via PIL."""
    arrays = []
    for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
        for path in sorted(class_dir.glob("*.png")):
            image = Image.open(path).convert(mode)
            if size is not None:
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image)
            arrays.append(array[..., None] if array.ndim == 2 else array)
    return np.stack(arrays)


def snapshot(root: Path):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


# ----------------------------------------------------------------------------------------------- contents


def test_shapes_labels_and_class_order_match_torchvision(folder):
    from torchvision.datasets import ImageFolder

    info = dataset_info(name_of(folder))
    assert (info.n_classes, info.n_channels, info.input_size, info.multilabel) == (3, 3, (32, 32), False)
    assert info.class_names == ("class_00", "class_01", "class_02")
    for split, n in (("train", 60), ("test", 30)):
        data = load_split(name_of(folder), split, val_size=0)
        reference = ImageFolder(str(folder / split))
        assert reference.classes == list(info.class_names)
        assert data.images.dtype == torch.uint8 and data.images.shape == (n, 3, 32, 32)
        assert data.targets.dtype == torch.int64
        assert data.targets.tolist() == [label for _, label in reference.samples]
        expected = np.stack([np.asarray(reference.loader(path)) for path, _ in reference.samples])
        assert np.array_equal(data.images.permute(0, 2, 3, 1).numpy(), expected)


def test_normalisation_is_the_numpy_mean_and_std_of_the_training_images(folder):
    pixels = pil_images(folder, "train").astype(np.float64) / 255
    mean, std = pixels.mean(axis=(0, 1, 2)), pixels.std(axis=(0, 1, 2))
    got_mean, got_std = dataset_info(name_of(folder)).normalization
    np.testing.assert_allclose(got_mean, mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_std, std, rtol=0, atol=1e-12)
    x, y = next(iter(get_loader(name_of(folder), "test", batch_size=30, val_size=0)))
    test = pil_images(folder, "test").astype(np.float64) / 255
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), (test - mean) / std, atol=1e-5)
    assert y.tolist() == [c for c in range(3) for _ in range(10)]


def test_given_mean_and_std_are_used(folder):
    name = name_of(folder, "mean=0.5&std=0.25,0.5,1")
    info = dataset_info(name)
    assert info.normalization == ((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    x, _ = next(iter(get_loader(name, "test", batch_size=30)))
    test = pil_images(folder, "test").astype(np.float64) / 255
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), (test - 0.5) / np.array([0.25, 0.5, 1.0]), atol=1e-5)
    assert describe_dataset(name)["normalization_source"] == "given"


@pytest.mark.parametrize("options,size", [("size=16", (16, 16)), ("size=12x20", (12, 20)), ("size=40", (40, 40))])
def test_resize(folder, options, size):
    name = name_of(folder, options)
    info = dataset_info(name)
    assert info.input_size == size
    data = load_split(name, "train", val_size=0)
    assert data.images.shape == (60, 3, *size)
    expected = pil_images(folder, "train", size=size)
    assert np.array_equal(data.images.permute(0, 2, 3, 1).numpy(), expected)
    np.testing.assert_allclose(info.normalization[0], (expected / 255).mean(axis=(0, 1, 2)), atol=1e-12)
    x, _ = next(iter(get_loader(name, "train", batch_size=8, val_size=6)))  # augmentation works at any size
    assert x.shape == (8, 3, *size)


def test_default_size_is_the_first_training_images_and_all_are_resized_to_it(tmp_path):
    root = make_image_folder(tmp_path / "mixed", classes=2, train=3, test=2)
    Image.new("RGB", (20, 10), (200, 10, 10)).save(root / "train" / "class_00" / "000.png")  # first: H 10, W 20
    Image.new("RGB", (50, 7), (10, 200, 10)).save(root / "test" / "class_01" / "001.png")
    info = dataset_info(name_of(root))
    assert info.input_size == (10, 20) and info.name.endswith("?size=10x20")
    assert load_split(name_of(root), "test").images.shape == (4, 3, 10, 20)
    assert load_split(name_of(root), "train", val_size=0).images[0, :, 0, 0].tolist() == [200, 10, 10]


def test_grayscale_folders_have_one_channel_and_mixed_ones_three(tmp_path):
    gray = make_image_folder(tmp_path / "gray", classes=2, train=4, test=2, mode="L")
    info = dataset_info(name_of(gray))
    assert info.n_channels == 1 and len(info.normalization[0]) == 1
    data = load_split(name_of(gray), "test")
    assert data.images.shape == (4, 1, 32, 32)
    assert np.array_equal(data.images.permute(0, 2, 3, 1).numpy(), pil_images(gray, "test", mode="L"))
    Image.open(gray / "test" / "class_01" / "000.png").convert("RGB").save(gray / "test" / "class_01" / "000.png")
    assert dataset_info(name_of(gray)).n_channels == 3  # one colour image: everything RGB
    assert load_split(name_of(gray), "train", val_size=0).images.shape == (8, 3, 32, 32)


def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path):
    root = make_image_folder(tmp_path / "deep", classes=2, train=1, test=1, size=4, mode="L")
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(root / "train" / "class_00" / "000.png")
    assert Image.open(root / "train" / "class_00" / "000.png").mode.startswith("I;16")
    images = load_split(name_of(root), "train", val_size=0).images
    assert images.shape == (2, 1, 4, 4) and (images[0] == 40000 >> 8).all()


def test_the_fixtures_classes_are_learnable(folder):
    """make_image_folder's images carry a class signal: nearest class-mean colour classifies the test images."""
    train = load_split(name_of(folder), "train", val_size=0)
    test = load_split(name_of(folder), "test")
    means = torch.stack([train.images[train.targets == c].float().mean((0, 2, 3)) for c in range(3)])
    predicted = torch.cdist(test.images.float().mean((2, 3)), means).argmin(1)
    assert (predicted == test.targets).float().mean() == 1


# ----------------------------------------------------------------------------------------------- splits and loaders


def test_val_is_held_out_of_train_as_for_the_built_in_datasets(folder):
    train = load_split(name_of(folder), "train", val_size=6)
    val = load_split(name_of(folder), "val", val_size=6)
    full = load_split(name_of(folder), "train", val_size=0)
    assert (len(train), len(val)) == (54, 6)
    assert torch.equal(val.images, full.images[split_indices(60, "val", 6)])
    assert torch.equal(train.targets, full.targets[split_indices(60, "train", 6)])
    with pytest.raises(UserError, match=r"val_size must be an integer in 0\.\.59"):
        load_split(name_of(folder), "train")  # the default 5000 is more than the folder has


def test_a_val_folder_is_the_val_split(tmp_path):
    root = make_image_folder(tmp_path / "withval", classes=2, train=5, test=3, val=4)
    for val_size in (0, 2, 5000):  # ignored
        assert len(load_split(name_of(root), "train", val_size=val_size)) == 10
        val = load_split(name_of(root), "val", val_size=val_size)
        assert len(val) == 8 and val.targets.tolist() == [0] * 4 + [1] * 4
    assert np.array_equal(val.images.permute(0, 2, 3, 1).numpy(), pil_images(root, "val"))
    assert get_loader(name_of(root), "val", val_size=0).num_samples == 8
    assert describe_dataset(name_of(root))["samples"] == {"train": 10, "val": 8, "test": 6}


def test_max_samples_keeps_the_first_samples(folder):
    loader = get_loader(name_of(folder), "test", batch_size=4, max_samples=7)
    assert loader.num_samples == 7 and len(loader) == 2
    x = torch.cat([b for b, _ in loader])
    full, _ = next(iter(get_loader(name_of(folder), "test", batch_size=100)))
    assert torch.equal(x, full[:7])


def test_seeded_shuffling_and_augmentation(folder):
    make = lambda seed: get_loader(name_of(folder), "train", batch_size=16, val_size=6, seed=seed)  # noqa: E731
    a, b, c = (torch.cat([x for x, _ in make(s)]) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = get_loader(name_of(folder), "train", batch_size=54, val_size=6, augment=False, shuffle=False)
    augmented = get_loader(name_of(folder), "train", batch_size=54, val_size=6, shuffle=False)
    assert not torch.equal(next(iter(plain))[0], next(iter(augmented))[0])


def test_decoded_once_and_reread_when_a_file_changes(folder):
    first = load_split(name_of(folder), "test")
    assert load_split(name_of(folder), "test").images is first.images
    path = folder / "test" / "class_00" / "000.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(path)
    os.utime(path, ns=(1, 1))
    assert load_split(name_of(folder), "test").images[0, :, 0, 0].tolist() == [1, 2, 3]


# ----------------------------------------------------------------------------------------------- names and provenance


def test_canonical_name_and_display_name(folder, monkeypatch):
    monkeypatch.chdir(folder.parent)
    info = dataset_info("imagefolder:images")
    assert info.name == f"imagefolder:{folder.resolve()}?size=32"
    assert dataset_info(info.name) == info
    assert info.display_name.startswith("ImageFolder-images-") and "/" not in info.display_name
    assert dataset_info("imagefolder:images?size=16").display_name != info.display_name
    assert dataset_info("imagefolder:images?std=0.5&mean=0.5").name == \
        f"imagefolder:{folder.resolve()}?size=32&mean=0.5&std=0.5"


def test_names_built_from_command_line_flags(folder):
    assert imagefolder_name(folder) == f"imagefolder:{folder}"
    assert imagefolder_name(folder, "48x64", "0.5,0.4,0.3", [0.2, 0.2, 0.2]) == \
        f"imagefolder:{folder}?size=48x64&mean=0.5,0.4,0.3&std=0.2,0.2,0.2"
    assert with_image_options("cifar10") == "cifar10"
    assert with_image_options(name_of(folder, "size=8&std=0.3"), image_size=16, mean="0.1") == \
        f"imagefolder:{folder}?size=16&mean=0.1&std=0.3"
    with pytest.raises(UserError, match="apply to imagefolder:DIR datasets only"):
        with_image_options("cifar10", image_size=64)
    assert "imagefolder:DIR" in DATASET_HELP


def test_check_dataset_name(folder, tmp_path):
    assert check_dataset_name("mnist") == "mnist"
    assert check_dataset_name(name_of(folder, "size=8")) == name_of(folder, "size=8")
    with pytest.raises(UserError, match="unknown dataset 'imagenet'; valid names: .*imagefolder:DIR"):
        check_dataset_name("imagenet")
    with pytest.raises(UserError, match=f"image folder {tmp_path / 'nowhere'} does not exist"):
        check_dataset_name(f"imagefolder:{tmp_path / 'nowhere'}")


def test_describe_dataset(folder):
    record = describe_dataset(name_of(folder))
    assert json.loads(json.dumps(record)) == record
    assert record["path"] == str(folder.resolve()) and record["image_size"] == [32, 32] and record["mode"] == "RGB"
    assert record["classes"] == ["class_00", "class_01", "class_02"]
    assert record["samples"] == {"train": 60, "test": 30}
    assert (record["mean"], record["std"]) == tuple(map(list, dataset_info(name_of(folder)).normalization))
    assert record["normalization_source"] == "computed" and record["files_digest"].startswith("sha256:")
    assert describe_dataset(name_of(folder, "size=16"))["files_digest"] == record["files_digest"]
    Image.new("RGB", (32, 32)).save(folder / "test" / "class_02" / "zzz.png")
    assert describe_dataset(name_of(folder))["files_digest"] != record["files_digest"]
    assert describe_dataset("cifar10")["mean"] == [0.4914, 0.4822, 0.4465]


def test_built_in_datasets_carry_their_normalisation():
    assert dataset_info("mnist").normalization == ((0.1307,), (0.3081,))
    assert dataset_info("celeba").normalization is None


# ----------------------------------------------------------------------------------------------- bad input


def _corrupt(root):
    path = root / "train" / "class_01" / "003.png"
    path.write_bytes(b"not a png at all")
    return str(path)


def _truncated(root):
    path = root / "test" / "class_02" / "004.png"
    path.write_bytes(path.read_bytes()[:200])
    return str(path)


def _empty_class(root):
    for path in (root / "test" / "class_01").iterdir():
        path.unlink()
    return f"class folder {root / 'test' / 'class_01'} holds no images"


def _no_images_at_all(root):
    for split in ("train", "test"):
        for path in (root / split).rglob("*.png"):
            path.unlink()
    return f"class folder {root / 'train' / 'class_00'} holds no images"


def _missing(split):
    def make(root):
        for path in sorted((root / split).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (root / split).rmdir()
        return f"image folder {root} has no '{split}' folder"
    return make


def _extra_class(root):
    (root / "test" / "zebra").mkdir()
    Image.new("RGB", (32, 32)).save(root / "test" / "zebra" / "0.png")
    return f"{root / 'test'} has class folders zebra that {root / 'train'} lacks"


def _missing_class(root):
    (root / "train" / "zebra").mkdir()
    Image.new("RGB", (32, 32)).save(root / "train" / "zebra" / "0.png")
    return f"{root / 'test'} lacks the class folders zebra of {root / 'train'}"


def _val_differs(root):
    (root / "val" / "class_00").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(root / "val" / "class_00" / "0.png")
    return f"{root / 'val'} lacks the class folders class_01, class_02"


def _loose_images(root):
    for class_dir in (root / "train").iterdir():
        for path in class_dir.iterdir():
            path.rename(root / "train" / f"{class_dir.name}_{path.name}")
        class_dir.rmdir()
    return f"image folder {root / 'train'} has no class folders (its 60 images directly inside must go into class"


def _constant(root):
    for path in root.rglob("*.png"):
        Image.new("RGB", (32, 32), (5, 5, 5)).save(path)
    return f"the training images of {root / 'train'} are constant in a channel"


@pytest.mark.parametrize("damage", [_corrupt, _truncated, _empty_class, _no_images_at_all, _missing("train"),
                                    _missing("test"), _extra_class, _missing_class, _val_differs, _loose_images,
                                    _constant],
                         ids=lambda f: getattr(f, "__name__", "missing").strip("_"))
def test_bad_folders_are_one_line_user_errors_naming_the_file(folder, damage):
    expected = damage(folder)
    before = snapshot(folder)
    with pytest.raises(UserError) as caught:
        load_split(name_of(folder), "test")
        load_split(name_of(folder), "train", val_size=0)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    if damage in (_corrupt, _truncated):
        assert message.startswith(f"image {expected} cannot be read") and "replace or delete the file" in message
    with pytest.raises(UserError):
        dataset_info(name_of(folder))
    assert snapshot(folder) == before  # nothing written


@pytest.mark.parametrize("name,pattern", [
    ("imagefolder:", "names no folder"),
    ("imagefolder:?size=3", "names no folder"),
    ("imagefolder:{root}?colour=red", "unknown option 'colour=red'"),
    ("imagefolder:{root}?size=3&size=4", "option 'size' is given twice"),
    ("imagefolder:{root}?size=big", "image size 'big' is not N or HxW"),
    ("imagefolder:{root}?size=0", "must be at least 1 pixel"),
    ("imagefolder:{root}?mean=a,b", "mean 'a,b' is not a comma-separated list of numbers"),
    ("imagefolder:{root}?std=0.5,0,0.5", "every value must be > 0"),
    ("imagefolder:{root}?mean=0.5,0.5", "mean has 2 values but the images of .* have 3 channel"),
    ("imagefolder:{root}/nowhere", "image folder .*nowhere does not exist"),
])
def test_bad_names(folder, name, pattern):
    with pytest.raises(UserError, match=pattern):
        dataset_info(name.format(root=folder))


def test_a_question_mark_in_the_folder_name(tmp_path):
    root = make_image_folder(tmp_path / "what?", classes=2, train=2, test=1)
    assert dataset_info(f"imagefolder:{root}").name == f"imagefolder:{root}?size=32"
    assert dataset_info(f"imagefolder:{root}?size=8").input_size == (8, 8)


def test_hidden_and_other_files_are_skipped(folder):
    (folder / "train" / ".ipynb_checkpoints").mkdir()
    (folder / "train" / "class_00" / "._000.png").write_bytes(b"macOS resource fork")
    (folder / "train" / "class_00" / "notes.txt").write_text("not an image")
    nested = folder / "train" / "class_01" / "more"
    nested.mkdir()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(nested / "x.PNG")
    data = load_split(name_of(folder), "train", val_size=0)
    assert len(data) == 61 and dataset_info(name_of(folder)).n_classes == 3
    assert data.targets.tolist().count(1) == 21
