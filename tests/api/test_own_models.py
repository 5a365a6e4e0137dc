"""The Python API on the user's own networks and data: torchvision and timm models, a user's own constructor,
a generated image folder and data given as batches (src/api.py)."""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import src.stitching.cut as cut
from src import load_result, stitch, stitch_matrix
from src.data import get_loader
from src.errors import UserError
from src.models.specs import load_model_spec
from tests.data_fixtures import make_image_folder
from tests.fixtures.user_models import tiny_cnn

QUICK = {"epochs": 1, "batch_size": 16, "measure_samples": 32}


def _batches(n=64, classes=10, size=32, seed=0, batch=32):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, size, size, generator=gen), torch.arange(n) % classes
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def _train(model: nn.Module, name: str, epochs: int = 4, seed: int = 0) -> float:
    """A few epochs of Adam on the image folder; returns the test accuracy."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        for x, y in get_loader(name, "train", 32, seed=seed, val_size=0, augment=False):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        hits = [(model(x).argmax(1) == y).float() for x, y in get_loader(name, "test", 100)]
    return float(torch.cat(hits).mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny CNNs (seeds 0 and 1) trained on a generated 4-class image folder, and the folder's data set name."""
    root = make_image_folder(tmp_path_factory.mktemp("images"), classes=4, train=40, test=20)
    name = f"imagefolder:{root}"
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = tiny_cnn(num_classes=4, in_chans=3)
        assert _train(model, name, seed=seed) > 0.8  # the classes are learnable: the stitches below mean something
        models.append(model)
    return name, models


def test_a_stitch_between_two_trained_user_models_beats_chance_clearly(trained):
    name, (a, b) = trained
    result = stitch(a, b, "2", "2", dataset=name, epochs=3, batch_size=16, val_size=16, lr=1e-2)
    accuracy = result["model_results"]["trans"]["acc"]
    assert accuracy > 0.7, accuracy  # 4 classes: chance is 0.25
    assert result["params"]["dataset"].startswith("imagefolder:") and result["stitch"]["kind"] == "conv1x1"
    assert result["params"]["front_model"].startswith("python:Sequential#")


def test_data_given_as_a_dataset_and_as_batches_give_the_same_stitch(trained):
    name, (a, b) = trained
    train = get_loader(name, "train", 40, shuffle=False, augment=False, val_size=0)
    test = get_loader(name, "test", 40, shuffle=False, augment=False, val_size=0)
    as_batches = stitch(a, b, "2", "2", train=list(train), test=list(test), **QUICK)
    x, y = (torch.cat(t) for t in zip(*list(train)))
    as_dataset = stitch(a, b, "2", "2", train=torch.utils.data.TensorDataset(x, y), test=list(test), **QUICK)
    assert as_batches["model_results"]["trans"]["acc"] == as_dataset["model_results"]["trans"]["acc"]
    assert np.array_equal(as_batches["trans_m"]["after"]["w"], as_dataset["trans_m"]["after"]["w"])
    assert as_batches["params"]["dataset"] == "user data"


@pytest.mark.parametrize("front,end,layers,kind", [
    ("torchvision:resnet18", "timm:resnet18", ("layer2", "layer2"), "conv1x1"),
    ("timm:vit_tiny_patch16_224?img_size=32,patch_size=4,depth=2", "torchvision:resnet18", ("blocks.0", "layer1"),
     "tokens_to_map"),
    ("torchvision:resnet18", "timm:vit_tiny_patch16_224?img_size=32,patch_size=4,depth=2", ("layer1", "blocks.1"),
     "map_to_tokens"),
], ids=["torchvision-timm-resnet", "vit-into-resnet", "resnet-into-vit"])
def test_torchvision_and_timm_networks_stitch_across_shapes(trained, front, end, layers, kind):
    """Random-initialised specs on the generated image folder (their classes and channels from the data)."""
    name, _ = trained
    result = stitch(front, end, *layers, dataset=name, val_size=16, max_samples=64, **QUICK)
    assert result["stitch"]["kind"] == kind and result["params"]["dataset"].startswith("imagefolder:")
    assert 0 <= result["model_results"]["trans"]["acc"] <= 1 and result["params"]["front_model"] == front


def test_a_network_torch_fx_cannot_trace_stitches_through_hooks_with_the_same_result(monkeypatch, capsys):
    class Branchy(nn.Module):
        """Data-dependent control flow: torch.fx cannot trace it."""

        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 10)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            if h.mean() > -1:  # always true, but fx cannot know
                h = h * 1.0
            return self.head(h.mean((2, 3)))

    torch.manual_seed(0)
    a, b = Branchy(), Branchy()
    batches = _batches(classes=10)
    hooked = stitch(a, b, "conv", "conv", train=batches, test=batches, **QUICK)
    assert "note: torch.fx cannot trace Branchy" in capsys.readouterr().out
    # the same pair of torchvision networks (which fx traces) both ways: equal numbers
    torch.manual_seed(1)
    c, d = torchvision.models.resnet18(num_classes=10), torchvision.models.resnet18(num_classes=10)
    traced = stitch(c, d, "layer1", "layer2", train=batches, test=batches, **QUICK)
    monkeypatch.setattr(cut, "_trace", lambda model, layer: None)
    through_hooks = stitch(c, d, "layer1", "layer2", train=batches, test=batches, **QUICK)
    assert through_hooks["model_results"]["trans"]["acc"] == traced["model_results"]["trans"]["acc"]
    # both paths call the same modules on the same tensors in the same order: the same kernels, the same bits
    assert np.array_equal(through_hooks["trans_m"]["after"]["w"], traced["trans_m"]["after"]["w"])
    assert 0 <= hooked["model_results"]["trans"]["acc"] <= 1


def test_a_stitch_matrix_of_two_torchvision_networks_with_controls_writes_the_scripts_files(tmp_path):
    torch.manual_seed(0)
    a, b = torchvision.models.resnet18(num_classes=10), torchvision.models.resnet18(num_classes=10)
    batches = _batches()
    summary = stitch_matrix(a, b, ["layer1", "layer2"], ["layer2", "layer3"], train=batches, test=batches,
                            controls=True, out_dir=tmp_path, run_name="m", **QUICK)
    assert summary["tables"]["matrix"].shape == (2, 2)
    assert {"matrix_control_random_front", "matrix_control_random_end"} <= set(summary["tables"])
    run = tmp_path / "m"
    assert (run / "matrix.csv").is_file() and (run / "matrix.png").is_file() and (run / "matrix.pkl").is_file()
    cell = load_result(run / "cells" / "layer1--layer3.pkl")
    assert cell["model_results"]["trans"]["acc"] == summary["tables"]["matrix"].loc["layer1", "layer3"]
    # the random-weight front is a re-initialised copy: other weights, same architecture
    assert summary["controls"]["random_front"]["source"].startswith("re-initialised copy")


def test_a_spec_without_weights_is_a_seeded_random_network():
    one, _ = load_model_spec("torchvision:resnet18", n_classes=10, seed=3)
    two, _ = load_model_spec("torchvision:resnet18", n_classes=10, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(one.state_dict().values(), two.state_dict().values()))


@pytest.mark.parametrize("call,message", [
    (lambda a: stitch(a, a, "2", "2", train=_batches(), epochs=1), "give both train= and test="),
    (lambda a: stitch(a, a, "2", "2", train=_batches(), test=_batches(), epochz=1), "unknown option epochz"),
    (lambda a: stitch(a, a, "2", "2", train=_batches(), test=_batches(), dataset="fashion"), "either dataset="),
    (lambda a: stitch(a, 3, "2", "2", train=_batches(), test=_batches()), "end network must be an nn.Module"),
    (lambda a: stitch(a, a, "2", "2", train=[(torch.randn(4, 1, 8, 8), torch.zeros(4))], test=_batches()),
     "different shapes"),
    (lambda a: stitch(a, a, "2", "2", train=_batches(classes=12), test=_batches(classes=12)),
     "outputs of shape (2, 4)"),
])
def test_bad_input_to_the_api_is_one_line(call, message):
    model = tiny_cnn(num_classes=4, in_chans=3)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        call(model)
    assert "\n" not in str(err.value)


def test_a_matrix_measured_on_too_few_samples_holds_nan_cka_with_the_reason():
    """Two test samples are too few for CKA (every centred pair of vectors is a multiple of (1, -1)): the matrix's CKA
    cells are NaN, never a number, and the summary says why for each."""
    torch.manual_seed(0)
    a, b = tiny_cnn(num_classes=4, in_chans=3), tiny_cnn(num_classes=4, in_chans=3)
    batches = _batches(n=64, classes=4)
    summary = stitch_matrix(a, b, ["2", "4"], ["2", "4"], train=batches, test=batches, epochs=1, batch_size=16,
                            measure_samples=2)
    assert summary["tables"]["cka"].isna().all().all()
    assert set(summary["degenerate"]["cka"]) == {"2--2", "2--4", "4--2", "4--4"}
    assert all("sample" in reason for reason in summary["degenerate"]["cka"].values())
    assert summary["tables"]["matrix"].notna().all().all()  # the stitches themselves are measured as always
