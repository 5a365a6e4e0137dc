"""The stitched network against independent references: hooks on full networks, plain formulas."""
import numpy as np
import pytest
import torch
from torch import nn

from src.errors import UserError
from src.models import create_model, layer_table
from src.similarity import LeastSquaresFit, cka
from src.stitching.build import build_frank
from src.stitching.cut import EndPart, FrontPart
from src.stitching.inits import build_mask, initialize, permutation_matrix
from src.stitching.affine import AffineStitch, make_stitch
from src.stitching.losses import batch_cka


def hook_reference(front_model, end_model, front_layer, end_layer, stitch, x):
    """The reference design: run both networks fully, carry the front layer's output through the
    stitch into the end network with a forward hook that overrides the end layer's output."""
    modules_f, modules_e = dict(front_model.named_modules()), dict(end_model.named_modules())
    saved = {}
    h1 = modules_f[front_layer].register_forward_hook(lambda m, i, o: saved.__setitem__("a", o))
    h2 = modules_e[end_layer].register_forward_hook(lambda m, i, o: stitch(saved["a"]))
    try:
        front_model(x)
        return end_model(x)
    finally:
        h1.remove()
        h2.remove()


def _models(name, channels=1, seeds=(1, 2)):
    models = [create_model(name, n_classes=10, n_channels=channels, seed=s) for s in seeds]
    for m in models:  # non-trivial BatchNorm statistics
        with torch.no_grad():
            m.train()(torch.randn(32, channels, 32, 32))
        m.eval()
    return models


CASES = [("tiny10", l) for l in ["conv1", "bn3", "relu5", "conv8", "pool"]] + \
        [("lenet", l) for l in ["pool1", "conv2", "flatten", "relu3"]] + \
        [("resnet20_w1", l) for l in ["relu1", "layer1.0", "layer1.1.bn2", "layer2.0.add", "layer2.0.conv1",
                                       "layer3.2.relu2", "layer3.0.downsample.1", "avgpool"]]


@pytest.mark.parametrize("name,layer", CASES)
def test_only_the_halves_run_and_the_result_equals_the_hook_reference(name, layer):
    front_model, end_model = _models(name)
    frank = build_frank(front_model, end_model, layer, layer, (1, 32, 32))
    x = torch.randn(6, 1, 32, 32)
    with torch.no_grad():
        ours = frank(x)
        reference = hook_reference(front_model, end_model, layer, layer, frank.stitch, x)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-5)
    assert frank.front.uses_fx and frank.end.uses_fx


def test_sequential_cuts_never_look_at_the_input_but_a_cut_inside_a_block_does():
    model = _models("resnet20_w1", seeds=(1,))[0]
    assert not EndPart(model, "layer1.0").needs_input
    assert not EndPart(model, "layer1.0.relu2").needs_input
    assert EndPart(model, "layer1.0.bn2").needs_input  # the skip branch still comes from the input
    tiny = _models("tiny10", seeds=(1,))[0]
    end, front = EndPart(tiny, "bn3"), FrontPart(tiny, "bn3")
    assert not end.needs_input
    ran = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: ran.append(n)) for n, m in tiny.named_modules() if n]
    with torch.no_grad():
        end(None, torch.randn(2, 32, 13, 13))
        ran_end = list(ran)
        ran.clear()
        front(torch.randn(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert ran == ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3"]
    assert ran_end[0] == "relu3" and ran_end[-1] == "fc" and not set(ran) & set(ran_end)


def test_works_for_a_torchvision_model_too():
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    other = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    frank = build_frank(model, other, "layer2", "layer2", (3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(frank(x), hook_reference(model, other, "layer2", "layer2", frank.stitch, x), atol=1e-5)


def test_frozen_networks_stay_in_eval_and_only_the_stitch_trains():
    frank = build_frank(*_models("tiny10"), "bn3", "bn3", (1, 32, 32))
    frank.train()
    assert frank.stitch.training and not frank.front_model.training and not frank.end_model.training
    trainable = [n for n, p in frank.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("stitch.") for n in trainable)
    running = frank.end_model.bn4.running_mean.clone()
    frank(torch.randn(8, 1, 32, 32)).sum().backward()
    assert torch.equal(running, frank.end_model.bn4.running_mean)


@pytest.mark.parametrize("name,layers", [("tiny10", None), ("lenet", None)])
def test_identity_stitch_of_a_model_into_itself_changes_no_output_at_any_layer(name, layers):
    model = _models(name, seeds=(3,))[0]
    x = torch.randn(16, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
    for layer in layer_table(model, (1, 32, 32))["layer"]:
        if layer == "fc" or layer == "fc3":
            continue
        frank = build_frank(model, model, layer, layer, (1, 32, 32))
        initialize(frank.stitch, "eye", torch.Generator())
        with torch.no_grad():
            assert torch.equal(frank(x), expected), layer


def test_least_squares_from_a_network_into_itself_recovers_the_identity():
    model = _models("tiny10", seeds=(4,))[0]
    frank = build_frank(model, model, "bn4", "bn4", (1, 32, 32))
    fit = LeastSquaresFit()
    with torch.no_grad():
        for _ in range(3):
            x = torch.randn(64, 1, 32, 32)
            fit.update(frank.front_activation(x), frank.end_target(x))
    initialize(frank.stitch, "ps_inv", torch.Generator(), fit)
    w = frank.stitch.param_dict()
    assert np.allclose(w["w"][:, :, 0, 0], np.eye(32), atol=1e-4) and np.allclose(w["b"], 0, atol=1e-4)


def test_shapes_pick_their_stitch_kind_and_wrong_layers_are_clear_errors():
    tiny, lenet = _models("tiny10", seeds=(1,))[0], _models("lenet", seeds=(1,))[0]
    x = torch.randn(2, 1, 32, 32)
    for end_layer, kind in (("pool1", "resample_conv1x1"), ("fc1", "flatten")):
        frank = build_frank(tiny, lenet, "bn3", end_layer, (1, 32, 32))
        assert frank.stitch.kind.name == kind and frank(x).shape == (2, 10)
    assert build_frank(tiny, lenet, "bn3", "fc1", (1, 32, 32), pool=True).stitch.kind.name == "pool_linear"
    with pytest.raises(UserError, match=r"layer 'bn33' does not exist in Tiny10; valid layers: conv1, bn1"):
        build_frank(tiny, tiny, "bn33", "bn3", (1, 32, 32))
    frank = build_frank(tiny, lenet, "bn3", "conv2", (1, 32, 32), flatten=True)  # pixel to pixel always fits
    assert frank.stitch.kind.name == "flatten" and frank(x).shape == (2, 10)


def test_different_widths_work_for_ps_inv_and_random_but_not_eye_perm_ones():
    narrow = _models("resnet20_w1", seeds=(1,))[0]
    wide = create_model("resnet20_w2", n_classes=10, n_channels=1, seed=2).eval()
    frank = build_frank(narrow, wide, "layer1.1", "layer1.1", (1, 32, 32))
    assert (frank.stitch.in_features, frank.stitch.out_features) == (16, 32)
    fit = LeastSquaresFit()
    with torch.no_grad():
        x = torch.randn(32, 1, 32, 32)
        fit.update(frank.front_activation(x), frank.end_target(x))
    initialize(frank.stitch, "ps_inv", torch.Generator(), fit)
    assert frank(x).shape == (32, 10)
    for init in ("eye", "perm", "ones-zeros"):
        with pytest.raises(UserError, match="needs equal widths.*16 to 32"):
            initialize(frank.stitch, init, torch.Generator())
    with pytest.raises(UserError, match="needs equal widths"):
        build_mask(frank.stitch, "random-permutation", torch.Generator())


def test_conv1x1_stitch_is_a_per_pixel_affine_map():
    stitch = make_stitch((5, 4, 4), (3, 4, 4))
    x = torch.randn(2, 5, 4, 4)
    w, b = stitch.weight.detach(), stitch.bias.detach()
    expected = torch.einsum("oc,nchw->nohw", w, x) + b[None, :, None, None]
    assert torch.allclose(stitch(x), expected, atol=1e-6)
    assert stitch.param_dict()["w"].shape == (3, 5, 1, 1)


def test_low_rank_stitch_loads_a_rank_r_matrix_exactly_and_masks_block_gradients():
    gen = torch.Generator().manual_seed(0)
    a, c = torch.randn(6, 2, generator=gen, dtype=torch.float64), torch.randn(2, 5, generator=gen, dtype=torch.float64)
    target = (a @ c).numpy()  # (out=6, in=5), rank 2
    stitch = AffineStitch((5,), (6,), "linear", rank=2)
    stitch.set_affine(target, np.arange(6.0))
    assert np.allclose(stitch.matrix().detach().numpy(), target, atol=1e-5)
    assert stitch.w1.shape == (5, 2) and stitch.w2.shape == (2, 6)
    again = AffineStitch((5,), (6,), "linear", rank=2)
    again.load_param_dict(stitch.param_dict())
    assert torch.equal(again.w1, stitch.w1) and torch.equal(again.bias, stitch.bias)
    with pytest.raises(UserError, match="between 1 and 5"):
        AffineStitch((5,), (6,), "linear", rank=9)
    full = AffineStitch((5,), (6,), "linear")
    mask = np.zeros((6, 5))
    mask[np.arange(5), np.arange(5)] = 1
    full.set_mask(mask)
    full(torch.randn(3, 5)).sum().backward()
    assert (full.weight.grad[torch.from_numpy(mask) == 0] == 0).all()
    assert (full.matrix().detach().numpy()[mask == 0] == 0).all()


def test_permutations_are_permutations_and_semi_match_finds_the_matching_channel():
    p = permutation_matrix(7, torch.Generator().manual_seed(1))
    assert (p.sum(0) == 1).all() and (p.sum(1) == 1).all() and set(np.unique(p)) == {0.0, 1.0}
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(400, 4, 3, 3, generator=gen)
    order = [2, 0, 3, 1]  # end channel j is front channel order[j], once with a sign flip
    y = x[:, order].clone()
    y[:, 1] *= -1
    fit = LeastSquaresFit().update(x, y + 0.1 * torch.randn(y.shape, generator=gen))
    stitch = make_stitch((4, 3, 3), (4, 3, 3))
    semi = build_mask(stitch, "semi-match", gen, fit)
    absolute = build_mask(stitch, "abs-semi-match", gen, fit)
    assert absolute.argmax(1).tolist() == order and (absolute.sum(1) == 1).all()
    assert semi.argmax(1)[[0, 2, 3]].tolist() == [2, 3, 1] and semi[1].argmax() != 0  # a -1 correlation loses


def test_batch_cka_is_linear_cka_and_differentiable():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, 2, 2, generator=gen, requires_grad=True)
    y = torch.randn(20, 7, generator=gen) + x.detach().flatten(1)[:, :7]
    value = batch_cka(x, y)
    assert value.item() == pytest.approx(cka(x.detach(), y), abs=1e-5)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name,layer", [("tiny10", "bn3"), ("resnet20_w1", "layer1.1.bn2"), ("resnet20_w1", "layer2.0")])
def test_folding_batchnorm_changes_only_rounding_and_removes_the_batchnorms(name, layer):
    front_model, end_model = _models(name)
    plain = build_frank(front_model, end_model, layer, layer, (1, 32, 32))
    folded = build_frank(front_model, end_model, layer, layer, (1, 32, 32), fold_batchnorm=True)
    folded.stitch.load_state_dict(plain.stitch.state_dict())
    x = torch.randn(8, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), plain(x), atol=1e-4, rtol=1e-4)
    bns = [m for m in folded.end.graph_module.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) < len([m for m in plain.end.graph_module.modules() if isinstance(m, nn.BatchNorm2d)])
    running_mean = end_model.bn1.running_mean.clone()
    folded(x)
    assert torch.equal(end_model.bn1.running_mean, running_mean)  # the original networks are untouched
