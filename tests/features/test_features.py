"""Feature extraction: hooks, output types, wrappers, layer selection, batching of loaders."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

from src.errors import UserError
from src.features import (ActivationStore, batch_input, capture, evaluating, forward_order, input_batches,
                          layer_outputs, module_names, paired_batches, resolve_layers, select_layers, unwrap_model)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 4, 3)), ("bn1", nn.BatchNorm2d(4)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(4, 4, 3)), ("relu2", nn.ReLU()),
        ("flat", nn.Flatten()), ("fc", nn.Linear(4 * 4 * 4, 3)),
    ]))


def hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


class Outputs(nn.Module):
    """Returns a tuple, a list and a dict from three submodules."""

    class Tuple(nn.Module):
        def forward(self, x):
            return (x * 2, "not a tensor")

    class List(nn.Module):
        def forward(self, x):
            return [None, x + 1]

    class Dict(nn.Module):
        def forward(self, x):
            return {"a": x - 1, "b": x * 10}

    def __init__(self):
        super().__init__()
        self.t, self.l, self.d = self.Tuple(), self.List(), self.Dict()

    def forward(self, x):
        return self.d(self.l(self.t(x)[0])[1])["b"]


# --- hooks ---------------------------------------------------------------------------------------

def test_hooks_are_removed_on_exit_and_when_the_body_raises():
    net = small_net()
    with capture(net, ["conv1", "fc"]) as acts:
        assert hook_count(net) == 2
        net(torch.randn(2, 1, 8, 8))
    assert set(acts) == {"conv1", "fc"} and hook_count(net) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with capture(net, ["conv1", "fc"]):
            raise RuntimeError("boom")
    assert hook_count(net) == 0


def test_outputs_are_detached_without_grad_even_outside_no_grad():
    net = small_net()
    with capture(net, ["relu1", "fc"]) as acts:
        out = net(torch.randn(2, 1, 8, 8))
    assert out.requires_grad  # the model itself still builds its graph
    assert not acts["relu1"].requires_grad and not acts["fc"].requires_grad


def test_tuple_list_and_dict_outputs():
    model = Outputs()
    x = torch.arange(6.0).reshape(2, 3)
    with capture(model, ["t", "l", "d"]) as acts:
        model(x)
    assert torch.equal(acts["t"], x * 2)          # first tensor of a tuple
    assert torch.equal(acts["l"], x * 2 + 1)      # first tensor of a list (None skipped)
    assert torch.equal(acts["d"], x * 2 + 1 - 1)  # first value of a dict
    with capture(model, ["d"], output_key="b") as acts:
        model(x)
    assert torch.equal(acts["d"], (x * 2 + 1) * 10)
    with pytest.raises(UserError, match="no key 'c'; keys: a, b"):
        with capture(model, ["d"], output_key="c"):
            model(x)


def test_in_place_overwrite_is_detected_and_repaired():
    net = nn.Sequential(OrderedDict([("lin", nn.Linear(3, 5)), ("relu", nn.ReLU(inplace=True))]))
    x = torch.randn(16, 3)
    expected = net.lin(x).detach()
    with torch.no_grad(), capture(net, ["lin"]) as acts:
        net(x)
        assert not torch.equal(acts["lin"], expected)  # ReLU(inplace) overwrote the recorded output
    recorder = capture(net, ["lin"])
    with torch.no_grad(), recorder:
        (recorder_outputs,) = layer_outputs(net, x, recorder, ["lin"])
        assert recorder.clone == {"lin"}
    assert torch.allclose(recorder_outputs, expected) and (recorder_outputs < 0).any()


# --- wrappers -----------------------------------------------------------------------------------

def test_data_parallel_is_unwrapped():
    net = small_net()
    wrapped = nn.DataParallel(net)  # on CPU a plain wrapper
    assert unwrap_model(wrapped) is net
    assert resolve_layers(unwrap_model(wrapped), ["re:relu\\d"]) == ["relu1", "relu2"]
    with torch.no_grad(), capture(wrapped, ["relu2"]) as acts:
        wrapped(torch.randn(2, 1, 8, 8))
    assert acts["relu2"].shape == (2, 4, 4, 4)
    assert hook_count(net) == 0


def test_distributed_data_parallel_is_unwrapped(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    net = small_net()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(net)
        assert unwrap_model(ddp) is net
        assert unwrap_model(nn.DataParallel(ddp)) is net  # nested wrappers too
        with torch.no_grad(), capture(ddp, ["fc"]) as acts:
            ddp(torch.randn(2, 1, 8, 8))
        assert acts["fc"].shape == (2, 3)
    finally:
        dist.destroy_process_group()


# --- selection ------------------------------------------------------------------------------------

def test_exact_glob_and_regex_selection_and_errors():
    net = small_net()
    assert resolve_layers(net, ["fc"]) == ["fc"]
    assert resolve_layers(net, ["conv*"]) == ["conv1", "conv2"]
    assert resolve_layers(net, ["re:(relu|bn)\\d", "fc"]) == ["bn1", "relu1", "relu2", "fc"]
    assert resolve_layers(net, "re:relu.") == ["relu1", "relu2"]  # one string is one pattern
    with pytest.raises(UserError) as err:
        resolve_layers(net, ["conv9*"])
    message = str(err.value)
    assert "'conv9*' matches no layer" in message and "valid layers: conv1, bn1, relu1, conv2" in message
    with pytest.raises(UserError, match="bad regular expression"):
        resolve_layers(net, ["re:("])


def test_forward_order_follows_the_calls_not_the_definition():
    class Backwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)   # defined first, called last
            self.body = nn.Linear(3, 4)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    model = Backwards()
    assert module_names(model) == ["head", "body"]
    assert forward_order(model, torch.randn(2, 3)) == ["body", "head"]
    assert select_layers(model, None, torch.randn(5, 3)) == ["body", "head"]  # default: leaves in call order
    assert select_layers(model, ["head", "body"], torch.randn(5, 3)) == ["head", "body"]  # patterns: definition order


def test_torchvision_resnet_selection_and_capture():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    layers = resolve_layers(model, ["re:layer\\d\\.1", "bn1", "fc"])
    assert layers == ["bn1", "layer1.1", "layer2.1", "layer3.1", "layer4.1", "fc"]
    recorder = capture(model, layers)
    with torch.no_grad(), recorder:
        outputs = layer_outputs(model, x, recorder, layers, "resnet18")
        expected_bn1 = model.bn1(model.conv1(x))
    shapes = [tuple(o.shape) for o in outputs]
    assert shapes == [(2, 64, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2), (2, 512, 1, 1), (2, 5)]
    # bn1 is followed by ReLU(inplace=True): the recorded value is BatchNorm's own output
    assert torch.allclose(outputs[0], expected_bn1) and (outputs[0] < 0).any()
    assert hook_count(model) == 0
    leaves = select_layers(model, None, x)
    assert leaves[:4] == ["conv1", "bn1", "relu", "maxpool"] and leaves[-2:] == ["avgpool", "fc"]


def test_layer_that_does_not_run_is_an_error():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.unused = small_net(), nn.Linear(2, 2)

        def forward(self, x):
            return self.net(x)

    net = WithSpare()
    recorder = capture(net, ["net.fc", "unused"])
    with torch.no_grad(), recorder, pytest.raises(UserError, match="unused of net did not run"):
        layer_outputs(net, torch.randn(2, 1, 8, 8), recorder, ["net.fc", "unused"], "net")


# --- loaders --------------------------------------------------------------------------------------

def test_batch_input_forms():
    x = torch.zeros(2, 3)
    assert batch_input(x) is x
    assert batch_input((x, torch.ones(2))) is x and batch_input([x]) is x
    assert batch_input({"image": x, "label": 1}) is x
    assert batch_input({"pixels": x}, input_key="pixels") is x
    with pytest.raises(UserError, match="keys pixels"):
        batch_input({"pixels": x})
    with pytest.raises(UserError, match="holds no input tensor"):
        batch_input(3)


def test_input_batches_truncate_and_merge_a_short_tail():
    data = [(torch.arange(i, i + 4.0).reshape(4, 1), None) for i in range(0, 12, 4)]  # 3 batches of 4
    sizes = [len(b) for b in input_batches(data, max_samples=10, min_batch=4)]
    assert sizes == [4, 6]  # 4, 4, 2 -> the 2 join the batch before
    merged = torch.cat(list(input_batches(data, max_samples=10, min_batch=4)))
    assert torch.equal(merged.flatten(), torch.arange(10.0))
    assert [len(b) for b in input_batches(data, max_samples=10)] == [4, 4, 2]
    with pytest.raises(UserError, match="only 3 samples"):
        list(input_batches(data, max_samples=3, min_batch=4))


def test_paired_batches_check_sizes_and_lengths():
    a = [torch.zeros(4, 1)] * 3
    b = [torch.ones(4, 1)] * 2
    with pytest.raises(UserError, match="different numbers of samples"):
        list(paired_batches(a, b))
    assert [len(x) for x, _ in paired_batches(a, b, max_samples=8)] == [4, 4]
    with pytest.raises(UserError, match="batch 0 has 4 samples in loader1 but 3"):
        list(paired_batches(a, [torch.ones(3, 1)]))


def test_evaluating_restores_every_training_flag():
    net = small_net().train()
    net.bn1.eval()
    with evaluating(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net.conv1.training and not net.bn1.training
    with pytest.raises(ValueError), evaluating(net):
        raise ValueError
    assert net.training and not net.bn1.training


def test_activation_store_refuses_what_does_not_fit():
    store = ActivationStore(["a", "b"], expected_samples=1000, limit_bytes=50_000)
    with pytest.raises(UserError, match="use fewer samples"):
        store.add([torch.zeros(10, 20), torch.zeros(10, 5)])  # 1000 x 25 floats = 100 kB > 50 kB
    store = ActivationStore(["a"], limit_bytes=10 ** 6)
    store.add([torch.ones(3, 2, 2, dtype=torch.float64)])
    store.add([torch.zeros(2, 2, 2, dtype=torch.float64)])
    (kept,) = store.tensors()
    assert kept.shape == (5, 2, 2) and kept.dtype == torch.float32 and store.n == 5
