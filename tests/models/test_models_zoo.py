"""Every zoo model: shapes, layer names, parameter counts, and that every layer is a distinct, stitchable module."""
from collections import Counter

import pytest
import torch
from torch import nn

from src.features import capture, get_module, module_names
from src.models import create_model, layer_table, stitchable_layers

ZOO = ["lenet", "tiny10", "nbn_tiny10", "dense", "inceptionv1", "resnet20_w1", "resnet20_w2",
       "resnet_1111", "resnet_2222", "resnet_1212", "resnet34", "resnet_1111_w16", "resnet_2222_w8"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("n_channels", [1, 3])
@pytest.mark.parametrize("n_classes", [10, 100])
def test_forward_shape(name, n_channels, n_classes):
    model = create_model(name, n_classes=n_classes, n_channels=n_channels, seed=0)
    with torch.no_grad():
        out = model(torch.randn(2, n_channels, 32, 32))
    assert out.shape == (2, n_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ZOO)
def test_every_parameter_gets_a_gradient(name):
    model = create_model(name, n_channels=1, seed=0)
    model(torch.randn(2, 1, 32, 32)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", ZOO)
def test_each_leaf_is_called_exactly_once_and_nothing_is_shared_or_inplace(name):
    model = create_model(name, seed=0)
    all_names = [n for n, _ in model.named_modules(remove_duplicate=False)]
    assert len(all_names) == len({id(m) for _, m in model.named_modules()}), "a module object is reused"
    leaves = module_names(model, leaves_only=True)
    calls = Counter()
    handles = [get_module(model, leaf).register_forward_hook(lambda m, i, o, leaf=leaf: calls.update([leaf]))
               for leaf in leaves]
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert calls == Counter({leaf: 1 for leaf in leaves})
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]


EXACT_LAYERS = {
    "lenet": ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten",
              "fc1", "relu3", "fc2", "relu4", "fc3"],
    "dense": ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3", "relu3", "fc4"],
    "tiny10": [f"{kind}{i}" for i in range(1, 9) for kind in ("conv", "bn", "relu")] + ["pool", "fc"],
    "nbn_tiny10": [f"{kind}{i}" for i in range(1, 9) for kind in ("conv", "relu")] + ["pool", "fc"],
}


@pytest.mark.parametrize("name", EXACT_LAYERS)
def test_plain_models_have_exactly_the_named_layers_in_order(name):
    assert stitchable_layers(create_model(name), (3, 32, 32)) == EXACT_LAYERS[name]


def _block_layers(prefix, downsample=False):
    names = [f"{prefix}.{n}" for n in ("conv1", "bn1", "relu1", "conv2", "bn2")]
    if downsample:
        names += [f"{prefix}.downsample.0", f"{prefix}.downsample.1"]
    return names + [f"{prefix}.add", f"{prefix}.relu2"]


@pytest.mark.parametrize("name,blocks", [("resnet20_w1", (3, 3, 3)), ("resnet20_w2", (3, 3, 3)),
                                         ("resnet_1111", (1, 1, 1, 1)), ("resnet_1212", (1, 2, 1, 2)),
                                         ("resnet_2222", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3)),
                                         ("resnet_1111_w8", (1, 1, 1, 1)), ("resnet_2222_w16", (2, 2, 2, 2))])
def test_resnet_layers(name, blocks):
    expected = ["conv1", "bn1", "relu1"]
    for stage, n_blocks in enumerate(blocks, start=1):
        for block in range(n_blocks):
            expected += _block_layers(f"layer{stage}.{block}", downsample=stage > 1 and block == 0)
    expected += ["avgpool", "flatten", "fc"]
    model = create_model(name)
    assert stitchable_layers(model, (3, 32, 32)) == expected
    assert f"layer{len(blocks) + 1}" not in module_names(model)


def test_resnet20_block_containers_and_shapes():
    model = create_model("resnet20_w1")
    table = layer_table(model, (3, 32, 32)).set_index("layer")
    assert table.loc["layer1.2.add", "output_shape"] == "16x32x32"
    assert table.loc["layer2.0.downsample.0", "output_shape"] == "32x16x16"
    assert table.loc["layer3.2.relu2", "output_shape"] == "64x8x8"
    assert table.loc["flatten", "output_shape"] == "64"
    assert isinstance(get_module(model, "layer1.0"), nn.Module)  # a block output is a layer name too


@pytest.mark.parametrize("width", [8, 16, 64])
def test_resnet_abcd_widths_double_per_stage_from_the_stem_width(width):
    table = layer_table(create_model(f"resnet_1212_w{width}", n_channels=1), (1, 32, 32)).set_index("layer")
    assert table.loc["relu1", "output_shape"] == f"{width}x32x32"
    for stage, (blocks, size) in enumerate([(1, 32), (2, 16), (1, 8), (2, 4)], start=1):
        last = f"layer{stage}.{blocks - 1}.relu2"  # the block's output
        assert table.loc[last, "output_shape"] == f"{width * 2 ** (stage - 1)}x{size}x{size}"
    assert table.loc["flatten", "output_shape"] == str(8 * width)


def test_inception_layers_and_sizes_for_32_and_224():
    model = create_model("inceptionv1", n_classes=7, seed=0).eval()
    names = module_names(model)
    for required in ["conv2d0.conv", "conv2d0.relu", "maxpool0", "lrn0", "conv2d2.relu", "maxpool1",
                     "mixed3a.b1x1.conv", "mixed3a.b1x1.relu", "mixed3a.b3x3_reduce.relu", "mixed3a.b3x3.conv",
                     "mixed3a.b5x5_reduce.conv", "mixed3a.b5x5.relu", "mixed3a.pool", "mixed3a.pool_proj.relu",
                     "mixed3a.concat", "maxpool4", "mixed4e.concat", "maxpool10", "mixed5b.concat", "avgpool", "fc"]:
        assert required in names
    assert not any(n.endswith(".bn") for n in names)
    blocks = ["mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b"]
    channels = [256, 480, 508, 512, 512, 528, 832, 832, 1024]
    for size, spatial in [(32, [4, 4, 2, 2, 2, 2, 2, 1, 1]), (224, [28, 28, 14, 14, 14, 14, 14, 7, 7])]:
        with torch.no_grad(), capture(model, blocks + ["fc"]) as acts:
            model(torch.randn(1, 3, size, size))
        assert [tuple(acts[b].shape[1:]) for b in blocks] == [(c, s, s) for c, s in zip(channels, spatial)]
        assert acts["fc"].shape == (1, 7)


def test_inception_batch_norm_flag():
    from src.models.inception import InceptionV1
    model = InceptionV1(n_classes=10, n_channels=3, batch_norm=True)
    assert "mixed4c.b5x5.bn" in module_names(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_tiny10_output_shapes():
    table = layer_table(create_model("tiny10"), (3, 32, 32)).set_index("layer")
    channels = [16, 16, 32, 32, 32, 64, 64, 64]
    spatial = [30, 28, 13, 11, 9, 4, 2, 2]
    for i, (c, s) in enumerate(zip(channels, spatial), start=1):
        for kind in ("conv", "bn", "relu"):
            assert table.loc[f"{kind}{i}", "output_shape"] == f"{c}x{s}x{s}"
    assert table.loc["pool", "output_shape"] == "64"
    assert table.loc["fc", "output_shape"] == "10"


# Parameter counts computed from the layer sizes, independently of the model code.
def conv(c_in, c_out, k, bias=True):
    return c_in * c_out * k * k + (c_out if bias else 0)


def linear(n_in, n_out):
    return n_in * n_out + n_out


def bn(c):
    return 2 * c


def resnet_count(widths, blocks, n_channels, n_classes):
    total = conv(n_channels, widths[0], 3, bias=False) + bn(widths[0])
    c_in = widths[0]
    for stage, (w, n) in enumerate(zip(widths, blocks)):
        for block in range(n):
            total += conv(c_in, w, 3, bias=False) + bn(w) + conv(w, w, 3, bias=False) + bn(w)
            if stage > 0 and block == 0:
                total += conv(c_in, w, 1, bias=False) + bn(w)
            c_in = w
    return total + linear(c_in, n_classes)


def inception_count(n_channels, n_classes):
    total = conv(n_channels, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    c_in = 192
    for n1, r3, n3, r5, n5, pp in [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64),
                                   (192, 96, 204, 16, 48, 64), (160, 112, 224, 24, 64, 64),
                                   (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
                                   (256, 160, 320, 32, 128, 128), (256, 160, 320, 48, 128, 128),
                                   (384, 192, 384, 48, 128, 128)]:
        total += conv(c_in, n1, 1) + conv(c_in, r3, 1) + conv(r3, n3, 3)
        total += conv(c_in, r5, 1) + conv(r5, n5, 5) + conv(c_in, pp, 1)
        c_in = n1 + n3 + n5 + pp
    return total + linear(c_in, n_classes)


def tiny10_count(n_channels, n_classes, batch_norm=True):
    widths = [16, 16, 32, 32, 32, 64, 64, 64]
    kernels = [3] * 7 + [1]
    total, c_in = 0, n_channels
    for w, k in zip(widths, kernels):
        total += conv(c_in, w, k) + (bn(w) if batch_norm else 0)
        c_in = w
    return total + linear(64, n_classes)


@pytest.mark.parametrize("n_channels,n_classes", [(1, 10), (3, 10), (3, 100)])
def test_parameter_counts(n_channels, n_classes):
    expected = {
        "lenet": conv(n_channels, 6, 5) + conv(6, 16, 5) + linear(400, 120) + linear(120, 84) + linear(84, n_classes),
        "tiny10": tiny10_count(n_channels, n_classes),
        "nbn_tiny10": tiny10_count(n_channels, n_classes, batch_norm=False),
        "dense": linear(n_channels * 32 * 32, 300) + 2 * linear(300, 300) + linear(300, n_classes),
        "inceptionv1": inception_count(n_channels, n_classes),
        "resnet20_w1": resnet_count((16, 32, 64), (3, 3, 3), n_channels, n_classes),
        "resnet20_w2": resnet_count((32, 64, 128), (3, 3, 3), n_channels, n_classes),
        "resnet_1111": resnet_count((64, 128, 256, 512), (1, 1, 1, 1), n_channels, n_classes),
        "resnet_2222": resnet_count((64, 128, 256, 512), (2, 2, 2, 2), n_channels, n_classes),
        "resnet_1212": resnet_count((64, 128, 256, 512), (1, 2, 1, 2), n_channels, n_classes),
        "resnet34": resnet_count((64, 128, 256, 512), (3, 4, 6, 3), n_channels, n_classes),
        "resnet_1111_w16": resnet_count((16, 32, 64, 128), (1, 1, 1, 1), n_channels, n_classes),
        "resnet_2222_w8": resnet_count((8, 16, 32, 64), (2, 2, 2, 2), n_channels, n_classes),
    }
    assert expected.keys() == set(ZOO)
    for name, count in expected.items():
        assert n_params(create_model(name, n_classes=n_classes, n_channels=n_channels)) == count, name


def test_well_known_parameter_counts():
    assert n_params(create_model("lenet", n_classes=10, n_channels=1)) == 156 + 2416 + 48120 + 10164 + 850
    assert n_params(create_model("tiny10")) == 86778
    assert n_params(create_model("resnet20_w1")) == 272474   # the usual "0.27M" of ResNet-20
    assert n_params(create_model("resnet_2222")) == 11173962  # the usual CIFAR ResNet-18
    assert n_params(create_model("resnet_2222_w64")) == 11173962  # 64 is the default width
    # resnet_1111_w16 by hand: stem 3*16*9 + 2*16; layer1.0 2*(16*16*9 + 2*16);
    # layer2.0 16*32*9 + 32*32*9 + 16*32 + 3*2*32; layer3.0, layer4.0 alike at 64 and 128; fc 128*10 + 10
    assert n_params(create_model("resnet_1111_w16")) == 464 + 4672 + 14528 + 57728 + 230144 + 1290
    assert n_params(create_model("resnet34")) == 21282122


def test_resnet_init():
    model = create_model("resnet20_w1", seed=0)
    assert torch.equal(model.layer2[0].bn1.weight, torch.ones(32))
    assert torch.equal(model.layer2[0].downsample[1].bias, torch.zeros(32))
    weight = model.layer3[1].conv2.weight  # fan_out = 64 * 3 * 3, gain sqrt(2)
    assert weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)
    assert model.conv1.bias is None and model.layer1[0].conv1.bias is None


@pytest.mark.parametrize("block,shortcut", [("layer1.1", "layer1.0"), ("layer2.0", "layer2.0.downsample")])
def test_zeroed_residual_branch_leaves_relu_of_the_shortcut(block, shortcut):
    model = create_model("resnet20_w1", seed=0).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), capture(model, [block, shortcut]) as acts:
        model(x)
    assert not torch.allclose(acts[block], torch.relu(acts[shortcut]))
    bn2 = get_module(model, f"{block}.bn2")
    with torch.no_grad():
        bn2.weight.zero_()
        bn2.bias.zero_()
    with torch.no_grad(), capture(model, [block, shortcut]) as acts:
        model(x)
    assert torch.equal(acts[block], torch.relu(acts[shortcut]))
