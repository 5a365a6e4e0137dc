"""CelebA from a few tiny PNGs and CSVs: targets, transforms, splits, seeded augmentation, errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from src.data import get_loader, load_split
from src.errors import UserError
from tests.data_fixtures import make_config, write_celeba


@pytest.fixture
def celeba(tmp_path):
    written = write_celeba(tmp_path / "celeba")
    return written, make_config(tmp_path, celeba_root=tmp_path / "celeba")


def _reference_eval(path):
    """Resize((256, 256)) -> CenterCrop(224) -> ToTensor() * 255 - 117, with PIL and numpy."""
    image = Image.open(path).convert("RGB").resize((256, 256), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)[16:240, 16:240]
    return torch.from_numpy(pixels.transpose(2, 0, 1) - 117)


def test_test_split_eval_transform_and_targets(celeba):
    written, config = celeba
    loader = get_loader("celeba", "test", batch_size=2, config=config)
    assert loader.info.multilabel and loader.num_samples == 3 and len(loader) == 2
    x, y = map(torch.cat, zip(*loader))
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.stack([_reference_eval(p) for p in written["test"][0]]))
    assert y.dtype == torch.float32 and y.shape == (3, 40)
    assert torch.equal(y, torch.from_numpy((written["test"][1] == 1).astype(np.float32)))


def test_val_comes_from_train_csv(celeba):
    written, config = celeba
    train = load_split("celeba", "train", val_size=3, config=config)
    val = load_split("celeba", "val", val_size=3, config=config)
    test = load_split("celeba", "test", val_size=3, config=config)
    assert (len(train), len(val), len(test)) == (5, 3, 3)
    assert not set(train.paths) & set(val.paths)
    assert set(train.paths) | set(val.paths) == set(written["train"][0])
    assert set(test.paths) == set(written["test"][0])
    row = {p: r for p, r in zip(*written["train"])}
    assert torch.equal(val.targets, torch.tensor(np.array([(row[p] + 1) / 2 for p in val.paths]), dtype=torch.float32))


def test_augmentation_is_seeded_and_leaves_the_global_rng_alone(celeba):
    _, config = celeba
    make = lambda seed, workers=0: get_loader("celeba", "train", batch_size=4, val_size=2, seed=seed,  # noqa: E731
                                              num_workers=workers, config=config)
    state = torch.get_rng_state()
    a = make(1)
    a1, a2 = list(a), list(a)
    assert torch.equal(state, torch.get_rng_state())
    b1 = list(make(1, workers=1))
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a1, b1)), \
        "worker processes do not change the augmentation"
    assert not torch.equal(a1[0][0], a2[0][0]) and not torch.equal(a1[0][0], list(make(2))[0][0])
    x = torch.cat([x for x, _ in a1])
    assert x.shape == (6, 3, 224, 224) and x.min() >= -117 and x.max() <= 255 - 117


def test_augmented_sample_differs_from_eval_sample(celeba):
    _, config = celeba
    plain = next(iter(get_loader("celeba", "train", batch_size=6, val_size=2, shuffle=False, augment=False, config=config)))[0]
    aug = next(iter(get_loader("celeba", "train", batch_size=6, val_size=2, shuffle=False, config=config)))[0]
    assert aug.shape == plain.shape and not torch.equal(aug, plain)


def test_missing_root_names_folder_and_key(tmp_path):
    with pytest.raises(UserError) as err:
        get_loader("celeba", "test", config=make_config(tmp_path, celeba_root=tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(err.value) and "CELEBA_ROOT" in str(err.value)


@pytest.mark.parametrize("header,row,pattern", [
    ("file," + ",".join(f"a{i}" for i in range(40)), "x.png" + ",1" * 40, "has no 'img' column"),
    ("img," + ",".join(f"a{i}" for i in range(39)), "x.png" + ",1" * 39, "has 39 attribute columns"),
    ("img," + ",".join(f"a{i}" for i in range(40)), "x.png" + ",0" * 40, "must all be -1 or \\+1"),
])
def test_bad_csv_names_the_file(tmp_path, header, row, pattern):
    (tmp_path / "test.csv").write_text(f"{header}\n{row}\n")
    with pytest.raises(UserError, match=f"test.csv.*{pattern}"):
        load_split("celeba", "test", config=make_config(tmp_path, celeba_root=tmp_path))


@pytest.mark.parametrize("damage,pattern", [("delete", "test_001.png does not exist"),
                                             ("overwrite", "test_001.png cannot be read")])
def test_missing_or_broken_image_names_the_file(celeba, damage, pattern):
    written, config = celeba
    path = written["test"][0][1]
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"not a png")
    batches = iter(get_loader("celeba", "test", batch_size=1, config=config))
    next(batches)
    with pytest.raises(UserError, match=pattern):
        next(batches)
