"""Checkpoints: round trip with metadata, bare state_dicts, the reference's files, clear errors."""
import pytest
import torch

from src.errors import UserError
from src.models import create_model
from src.models.checkpoint import load_checkpoint, load_model, read_checkpoint, save_checkpoint

META = {"model": "tiny10", "dataset": "fashion", "n_channels": 1, "n_classes": 10, "input_size": [32, 32],
        "init_seed": 5, "gradient_seed": 6, "epoch": 2, "iteration": 100, "val_acc": 0.5, "val_loss": 1.0}


def _trained_tiny10():
    model = create_model("tiny10", n_classes=10, n_channels=1, seed=5)
    with torch.no_grad():  # make BN statistics non-trivial so that they must be saved too
        model.train()(torch.randn(16, 1, 32, 32))
    return model.eval()


def test_round_trip_rebuilds_the_model_from_the_file_alone(tmp_path):
    model = _trained_tiny10()
    path = save_checkpoint(tmp_path / "c.pt", model, META)
    loaded, meta = load_checkpoint(path)
    assert meta == META and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    x = torch.randn(4, 1, 32, 32)
    assert torch.equal(model(x), loaded(x))
    assert load_model(path).meta["iteration"] == 100
    raw = torch.load(path, weights_only=True)  # only plain data inside
    assert set(raw) == {"format", "version", "state_dict", "meta"}


def test_bare_state_dict_needs_model_and_dataset(tmp_path):
    model = _trained_tiny10()
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(UserError, match="bare state_dict.*model name and dataset"):
        load_checkpoint(tmp_path / "bare.pt")
    loaded, meta = load_checkpoint(tmp_path / "bare.pt", model_name="Tiny10", dataset="fashion")
    assert meta["model"] == "tiny10" and meta["n_channels"] == 1
    with pytest.raises(UserError, match="do not fit a lenet"):
        load_checkpoint(tmp_path / "bare.pt", model_name="lenet", dataset="fashion")
    with pytest.raises(UserError, match="do not fit"):  # 3-channel input layer expected
        load_checkpoint(tmp_path / "bare.pt", model_name="tiny10", dataset="cifar10")


def test_wrong_model_name_for_a_project_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _trained_tiny10(), META)
    with pytest.raises(UserError, match="holds a tiny10 model, not lenet"):
        load_checkpoint(path, model_name="lenet")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_corrupt_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(UserError, match="neither a checkpoint"):
        read_checkpoint(tmp_path / "dict.pt")


@pytest.mark.parametrize("family,model", [("Tiny10", "tiny10"), ("ResNet20_w1", "resnet20_w1")])
def test_reference_checkpoints_load_through_load_checkpoint(reference_checkpoints, family, model):
    for path in sorted((reference_checkpoints / family / "CIFAR10").glob("*/110000.pt")):
        loaded, meta = load_checkpoint(path, model_name=model, dataset="cifar10")
        assert meta["n_classes"] == 10 and meta["source"] == "bare state_dict"
        out = loaded(torch.randn(8, 3, 32, 32))
        assert out.shape == (8, 10) and torch.isfinite(out).all()


def test_a_narrow_resnet_round_trips_with_its_width(tmp_path):
    model = create_model("resnet_1111_w8", n_classes=10, n_channels=1, seed=3)
    with torch.no_grad():
        model.train()(torch.randn(8, 1, 32, 32))
    model.eval()
    path = save_checkpoint(tmp_path / "w8.pt", model, {**META, "model": "resnet_1111_w8"})
    loaded = load_model(path)
    assert loaded.zoo_name == "resnet_1111_w8" and loaded.conv1.out_channels == 8
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
