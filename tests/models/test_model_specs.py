"""Models given as specs (torchvision:NAME, timm:NAME, MODULE:FUNCTION) with weights from a file or a seed."""
import hashlib
import socket
import sys
import zipfile

import pytest
import torch

from src.errors import UserError
from src.models.checkpoint import save_checkpoint
from src.models.specs import (infer_n_channels, infer_n_classes, infer_vit_geometry, is_model_spec,
                              load_model_spec, parse_model_spec, read_weights)
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"
VIT = "timm:vit_tiny_patch16_224?img_size=32,patch_size=4,depth=2"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Nothing here may reach the hub: any connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model spec tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def user_models(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    return "user_models"


def _trained(model, shape=(8, 3, 32, 32)):
    """BatchNorm statistics that differ from a fresh model's, so that buffers must be loaded too."""
    torch.manual_seed(123)
    with torch.no_grad():
        model.train()(torch.randn(*shape))
    return model.eval()


def _same_outputs(a, b, shape=(2, 3, 32, 32)):
    x = torch.randn(*shape)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(call, *patterns):
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for pattern in patterns:
        assert pattern in message, message
    return message


# --------------------------------------------------------------------------------------- random initialisation

@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:resnet18"])
def test_random_init_from_a_seed(spec):
    model, meta = load_model_spec(spec, n_classes=10, n_channels=3, input_size=32, seed=3)
    assert not model.training
    assert meta["spec"] == meta["model"] == spec and meta["source"] == spec.split(":")[0]
    assert meta["n_classes"] == 10 and meta["n_channels"] == 3 and meta["input_size"] == [32, 32]
    assert meta["weights"] is None and meta["weights_sha256"] is None
    assert meta["initialisation"] == "random (seed 3)" and meta["init_seed"] == 3
    state = torch.get_rng_state()
    again, _ = load_model_spec(spec, n_classes=10, seed=3)
    other, _ = load_model_spec(spec, n_classes=10, seed=4)
    assert torch.equal(state, torch.get_rng_state())  # the caller's random state is left alone
    assert _same_outputs(model, again) and not _same_outputs(model, other)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_timm_takes_the_data_channels():
    model, meta = load_model_spec("timm:resnet18", n_classes=10, n_channels=1, input_size=(28, 28))
    assert meta["n_channels"] == 1 and meta["input_size"] == [28, 28] and meta["kwargs"]["in_chans"] == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_models_stay_three_channel():
    _, meta = load_model_spec("torchvision:resnet18", n_classes=10, n_channels=1)
    assert meta["n_channels"] == 3  # the data's channel count is a fallback; torchvision cannot change it
    _one_line_error(lambda: load_model_spec("torchvision:resnet18?in_chans=1"), "3-channel input", "timm:NAME")


def test_timm_vit_with_spec_arguments():
    model, meta = load_model_spec(VIT, n_classes=10)
    assert meta["input_size"] == [32, 32] and meta["n_classes"] == 10
    assert len(model.blocks) == 2 and model.patch_embed.patch_size == (4, 4)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert parse_model_spec(VIT.replace(",", "&")).kwargs == parse_model_spec(VIT).kwargs == \
        {"img_size": 32, "patch_size": 4, "depth": 2}


def test_timm_vit_gets_the_data_input_size():
    model, meta = load_model_spec("timm:vit_tiny_patch16_224?patch_size=8,depth=1", n_classes=3, input_size=32)
    assert meta["input_size"] == [32, 32] and meta["kwargs"]["img_size"] == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    _, meta = load_model_spec("timm:vit_tiny_patch16_224?depth=1")
    assert meta["input_size"] == [224, 224] and meta["n_classes"] == 1000  # timm's defaults


def test_spec_values_are_python_literals():
    spec = parse_model_spec("pkg.mod:build?a=1,b=0.5,c=(32,32),d=True,e=avg,f='x,y',g=none&h=[1, 2]")
    assert spec.source == "callable" and spec.name == "pkg.mod:build"
    assert spec.kwargs == {"a": 1, "b": 0.5, "c": (32, 32), "d": True, "e": "avg", "f": "x,y", "g": None,
                           "h": [1, 2]}


# --------------------------------------------------------------------------------------- weights files

def _forms(state):
    return {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "optimizer": {"lr": 0.1}},
        "module": {f"module.{key}": value for key, value in state.items()},
    }


@pytest.mark.parametrize("form", ["plain", "state_dict", "model", "module"])
@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:resnet18"])
def test_saved_weights_load_in_every_form(tmp_path, spec, form):
    saved, _ = load_model_spec(spec, n_classes=10, seed=1)
    saved = _trained(saved)
    path = tmp_path / f"{form}.pt"
    torch.save(_forms(saved.state_dict())[form], path)
    model, meta = load_model_spec(spec, path, seed=0)  # another seed: every weight must come from the file
    assert _same_outputs(saved, model)
    assert meta["weights"] == str(path.resolve()) and meta["weights_sha256"] == _sha256(path)
    assert meta["initialisation"] == "weights" and meta["init_seed"] is None
    assert meta["n_classes"] == 10 and meta["weights_key"] == {"state_dict": "state_dict", "model": "model"}.get(form)


@pytest.mark.parametrize("wrap", [
    lambda s: {"model_state_dict": s}, lambda s: {"net": s}, lambda s: {"weights": s},
    lambda s: {"ema": s, "step": 5}, lambda s: {"model": {"state_dict": s}},
    lambda s: {f"_orig_mod.module.{k}": v for k, v in s.items()}])
def test_more_wrappers(tmp_path, user_models, wrap):
    saved = _trained(load_model_spec("user_models:tiny_cnn", n_classes=4, seed=1)[0])
    torch.save(wrap(saved.state_dict()), tmp_path / "w.pt")
    model, _ = load_model_spec("user_models:tiny_cnn", tmp_path / "w.pt")
    assert _same_outputs(saved, model)


def test_safetensors_and_project_checkpoints(tmp_path, user_models):
    saved = _trained(load_model_spec("user_models:tiny_cnn?width=4", n_classes=6, n_channels=1, seed=1)[0],
                     (8, 1, 32, 32))
    from safetensors.torch import save_file
    save_file(saved.state_dict(), str(tmp_path / "w.safetensors"))
    model, meta = load_model_spec("user_models:tiny_cnn?width=4", tmp_path / "w.safetensors")
    assert _same_outputs(saved, model, (2, 1, 32, 32)) and meta["n_classes"] == 6 and meta["n_channels"] == 1
    path = save_checkpoint(tmp_path / "c.pt", saved, {"model": "user_models:tiny_cnn?width=4", "n_classes": 6,
                                                        "n_channels": 1, "input_size": [28, 28]})
    model, meta = load_model_spec("user_models:tiny_cnn?width=4", path, input_size=32)
    assert _same_outputs(saved, model, (2, 1, 28, 28)) and meta["input_size"] == [28, 28]
    assert meta["weights_sha256"] == _sha256(path)


def test_legacy_data_parallel_file_keeps_module_versions(tmp_path, user_models):
    saved = _trained(load_model_spec("user_models:tiny_cnn", n_classes=4, seed=1)[0])
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": torch.nn.DataParallel(saved).state_dict()}, path, _use_new_zipfile_serialization=False)
    state, meta, key = read_weights(path)
    assert meta is None and key == "state_dict" and list(state) == list(saved.state_dict())
    assert state._metadata["1"] == {"version": 2}  # BatchNorm's version, with the module. prefix stripped
    model, _ = load_model_spec("user_models:tiny_cnn", path)
    assert _same_outputs(saved, model)


def test_classes_and_channels_come_from_the_weights(tmp_path):
    saved, _ = load_model_spec("timm:resnet18", n_classes=7, n_channels=1, seed=1)
    torch.save(saved.state_dict(), tmp_path / "w.pt")
    model, meta = load_model_spec("timm:resnet18", tmp_path / "w.pt", n_classes=10, n_channels=3)
    assert meta["n_classes"] == 7 and meta["n_channels"] == 1  # the data's values are only fallbacks
    assert _same_outputs(saved, model, (2, 1, 32, 32))
    saved, _ = load_model_spec("torchvision:resnet18", n_classes=5, seed=1)
    torch.save({"model": saved.state_dict()}, tmp_path / "tv.pt")
    _, meta = load_model_spec("torchvision:resnet18", tmp_path / "tv.pt", n_classes=10)
    assert meta["n_classes"] == 5
    squeeze, _ = load_model_spec("torchvision:squeezenet1_0", n_classes=7, seed=1)  # its classifier is a conv
    torch.save(squeeze.state_dict(), tmp_path / "squeeze.pt")
    assert load_model_spec("torchvision:squeezenet1_0", tmp_path / "squeeze.pt")[1]["n_classes"] == 7


def test_vit_geometry_comes_from_the_weights(tmp_path):
    saved, _ = load_model_spec(VIT, n_classes=10, seed=1)
    torch.save(saved.state_dict(), tmp_path / "vit.pt")
    assert infer_vit_geometry(saved.state_dict()) == (32, 4)
    model, meta = load_model_spec("timm:vit_tiny_patch16_224?depth=2", tmp_path / "vit.pt", input_size=224)
    assert meta["input_size"] == [32, 32] and meta["n_classes"] == 10
    assert _same_outputs(saved, model)


def test_inference_helpers():
    state = {"stem.weight": torch.zeros(8, 2, 3, 3), "blocks.0.fc.weight": torch.zeros(4, 8),
             "proj.weight": torch.zeros(6, 4)}
    assert infer_n_classes(state) == 6 and infer_n_channels(state) == 2
    assert infer_n_classes({**state, "fc.weight": torch.zeros(9, 8)}) == 9
    assert infer_n_classes(state, head="head") is None  # a declared head that is absent: no guess from the body
    assert infer_n_classes({}) is None and infer_n_channels({}) is None
    tv_vit = {"encoder.pos_embedding": torch.zeros(1, 50, 8), "conv_proj.weight": torch.zeros(8, 3, 32, 32)}
    assert infer_vit_geometry(tv_vit) == (224, 32)


# --------------------------------------------------------------------------------------- user constructors

def test_user_function_from_sys_path(tmp_path, user_models):
    model, meta = load_model_spec("user_models:tiny_cnn", n_classes=5, n_channels=1, input_size=16)
    assert meta["source"] == "callable" and meta["n_classes"] == 5 and meta["n_channels"] == 1
    assert meta["input_size"] == [16, 16] and meta["kwargs"] == {"num_classes": 5, "in_chans": 1}
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 5)
    model, meta = load_model_spec("user_models:tiny_mlp?size=4", n_classes=3, n_channels=2)
    assert meta["kwargs"] == {"n_classes": 3, "n_channels": 2, "size": 4}
    with torch.no_grad():
        assert model(torch.randn(2, 2, 4, 4)).shape == (2, 3)
    saved = _trained(load_model_spec("user_models:tiny_cnn", n_classes=5, n_channels=1, seed=2)[0], (8, 1, 16, 16))
    torch.save(saved.state_dict(), tmp_path / "w.pt")
    model, meta = load_model_spec("user_models:tiny_cnn", tmp_path / "w.pt")
    assert _same_outputs(saved, model, (2, 1, 16, 16)) and (meta["n_classes"], meta["n_channels"]) == (5, 1)


def test_user_module_in_the_current_folder(tmp_path, monkeypatch):
    name = "spec_test_cwd_models"
    (tmp_path / f"{name}.py").write_text("from torch import nn\n\ndef build(num_classes=2):\n"
                                         "    return nn.Linear(4, num_classes)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, name, raising=False)
    model, meta = load_model_spec(f"{name}:build", n_classes=3)
    assert model.out_features == 3 and meta["n_classes"] == 3
    assert str(tmp_path) not in sys.path  # the folder was on the path only for the import
    sys.modules.pop(name, None)


def test_is_model_spec(tmp_path, monkeypatch):
    for text in ["torchvision:resnet18", "timm:vit_tiny_patch16_224?img_size=32", "TIMM:resnet18",
                 "my_models:small_cnn", "pkg.sub.mod:build?width=4"]:
        assert is_model_spec(text), text
    for text in ["tiny10", "ResNet20_w1", "snapshots/Tiny10/fashion/in0-gn0/100.pt", "model.pt", "C:\\x\\m.pt",
                 "a:b:c", "my-models:f", "mod:1f", "", None]:
        assert not is_model_spec(text), text
    monkeypatch.chdir(tmp_path)
    (tmp_path / "timm:resnet18").write_bytes(b"")
    (tmp_path / "models:build").write_bytes(b"")
    assert not is_model_spec("timm:resnet18") and not is_model_spec("models:build")  # files are checkpoints


# --------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("spec, expected", [
    ("torchvision:resnt18", ["unknown torchvision model 'resnt18'", "did you mean resnet18"]),
    ("timm:vit_tiny_patch16", ["unknown timm model", "vit_tiny_patch16_224"]),
    ("timm:resnet18.no_such_tag", ["timm has no 'resnet18.no_such_tag'", "resnet18.a1_in1k"]),
    ("torchvision:fasterrcnn_resnet50_fpn", ["not an image classification model"]),
    ("timm:hf-hub:timm/resnet18.a1_in1k", ["not a timm model name", "nothing is downloaded"]),
    ("no_such_module_xyz:build", ["cannot import module 'no_such_module_xyz'"]),
    ("torchvison:resnet18", ["did you mean torchvision:NAME"]),
    ("user_models:tiny_cn", ["has no 'tiny_cn'", "did you mean tiny_cnn"]),
    ("user_models:not_a_model", ["returned a dict, not a torch.nn.Module"]),
    ("user_models:SOME_CONSTANT", ["not a function returning an nn.Module (it is of type int)"]),
    ("user_models:broken", ["building user_models:broken", "ValueError: width must be even"]),
    ("user_models:tiny_cnn?depth=3", ["takes no argument depth", "in_chans, num_classes, width"]),
    ("timm:resnet18?no_such_arg=1", ["building timm:resnet18", "no_such_arg"]),
    ("timm:resnet18?img_size", ["is not KEY=VALUE"]),
    ("timm:resnet18?depth=1,depth=2", ["gives depth twice"]),
    ("timm:resnet18?num_classes=3,n_classes=4", ["number of classes twice"]),
    ("resnet18", ["is not a model spec"]),
    ("timm:", ["is not a model spec"]),
])
def test_bad_specs_are_one_line_errors(user_models, spec, expected):
    _one_line_error(lambda: load_model_spec(spec), *expected)


def test_module_that_fails_to_import(tmp_path, monkeypatch):
    (tmp_path / "spec_test_broken_import.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _one_line_error(lambda: load_model_spec("spec_test_broken_import:build"),
                    "importing spec_test_broken_import", "No module named 'no_such_dependency_xyz'")


def test_unknown_device():
    _one_line_error(lambda: load_model_spec("timm:resnet18", n_classes=2, device="nonsense"),
                    "cannot put timm:resnet18 on device 'nonsense'")


@pytest.mark.parametrize("bad", [{"n_classes": 0}, {"n_channels": "3"}, {"input_size": (0, 4)}])
def test_bad_data_values(bad):
    _one_line_error(lambda: load_model_spec("timm:resnet18", **bad), "must be a positive integer")


def _tiny_weights(tmp_path, n_classes=4):
    saved = load_model_spec("user_models:tiny_cnn", n_classes=n_classes, seed=1)[0]
    path = tmp_path / "w.pt"
    torch.save(saved.state_dict(), path)
    return saved, path


def test_missing_and_unreadable_weights(tmp_path, user_models):
    spec = "user_models:tiny_cnn"
    _one_line_error(lambda: load_model_spec(spec, tmp_path / "absent.pt"), "weights file", "does not exist")
    _one_line_error(lambda: load_model_spec(spec, tmp_path), "is not a file")
    for name, content in [("empty.pt", b""), ("text.pt", b"epoch,loss\n1,0.5\n"), ("zip.pt", b"PK\x03\x04broken")]:
        (tmp_path / name).write_bytes(content)
        _one_line_error(lambda path=tmp_path / name: load_model_spec(spec, path), "not a readable PyTorch checkpoint")
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "other.pt")
    _one_line_error(lambda: load_model_spec(spec, tmp_path / "other.pt"), "holds no state_dict",
                    "the keys epoch, optimizer")


def test_damaged_weights_are_refused(tmp_path, user_models):
    _, path = _tiny_weights(tmp_path)
    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
        content = archive.read(record.filename)
    raw = bytearray(path.read_bytes())
    offset = raw.find(content) + 8
    raw[offset:offset + 16] = bytes(b ^ 0x5A for b in raw[offset:offset + 16])
    path.write_bytes(bytes(raw))
    _one_line_error(lambda: load_model_spec("user_models:tiny_cnn", path), "is damaged", "Bad CRC-32")


def test_weights_that_do_not_fit(tmp_path, user_models):
    _, path = _tiny_weights(tmp_path)
    message = _one_line_error(lambda: load_model_spec("user_models:tiny_cnn?width=16", path),
                              "do not fit user_models:tiny_cnn?width=16", "shape mismatch", "0.weight [8, 3, 3, 3]")
    assert "check that the spec names the architecture" in message
    resnet, _ = load_model_spec("timm:resnet18", n_classes=10, seed=1)
    torch.save(resnet.state_dict(), tmp_path / "r18.pt")
    _one_line_error(lambda: load_model_spec("timm:resnet34", tmp_path / "r18.pt"), "do not fit timm:resnet34",
                    "missing (layer1.2.", "...")
    _one_line_error(lambda: load_model_spec("user_models:tiny_cnn", tmp_path / "r18.pt"), "unexpected (conv1.weight")
    gray, _ = load_model_spec("timm:resnet18", n_classes=10, n_channels=1, seed=1)
    torch.save(gray.state_dict(), tmp_path / "gray.pt")
    _one_line_error(lambda: load_model_spec("torchvision:resnet18", tmp_path / "gray.pt"),
                    "conv1.weight [64, 1, 7, 7] in the file, [64, 3, 7, 7] in the model",
                    "torchvision's models take 3-channel input")


def test_zoo_checkpoint_is_not_spec_weights(tmp_path, user_models):
    from src.models import create_model
    path = save_checkpoint(tmp_path / "zoo.pt", create_model("tiny10", n_classes=10, n_channels=1, seed=0),
                           {"model": "tiny10", "dataset": "fashion", "n_classes": 10, "n_channels": 1})
    _one_line_error(lambda: load_model_spec("user_models:tiny_cnn", path), "checkpoint of the zoo model 'tiny10'")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, user_models, value):
    saved, path = _tiny_weights(tmp_path)
    state = saved.state_dict()
    state["7.weight"][1, 2] = value
    torch.save(state, path)
    _one_line_error(lambda: load_model_spec("user_models:tiny_cnn", path), "not finite", "tensor '7.weight'",
                    "1 NaN or infinite value(s)")
