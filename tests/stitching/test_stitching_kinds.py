"""Every stitch kind against a hand-written reference, its least-squares design against the map it applies,
the inits and masks it refuses, and its rebuild from the pickle."""

import numpy as np
import pytest
import torch

from tests.math_helpers import area_average, nearest_resize
from src.errors import UserError
from src.similarity import LeastSquaresFit
from src.stitching.inits import build_mask, check_options, initialize
from src.stitching.kinds import KINDS, choose_kind
from src.stitching.affine import AffineStitch, make_stitch
from src.stitching.rebuild import recorded_kind

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def _stitch(front_shape, end_shape, seed=0, **options):
    torch.manual_seed(seed)
    stitch = make_stitch(front_shape, end_shape, **options)
    with torch.no_grad():
        stitch.bias.normal_()  # a visible bias
    return stitch


def _dot_tol(n_terms: int, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    """Worst-case float32 rounding of ``sum_n w x + b`` (n + 1 terms, each |w x| <= max|w| max|x|): (n + 1) eps32 bound."""
    return (n_terms + 1) * EPS32 * (float(w.abs().max() * x.abs().max()) * n_terms + float(b.abs().max()))


def _one_by_one(x64: torch.Tensor, stitch: AffineStitch) -> torch.Tensor:
    """The 1x1 convolution written out in float64: ``out[n, o, h, w] = sum_c W[o, c] x[n, c, h, w] + b[o]``."""
    w, b = stitch.matrix().detach().double(), stitch.bias.detach().double()
    return torch.einsum("oc,nchw->nohw", w, x64) + b[None, :, None, None]


def _check(stitch, x, expected64, n_terms):
    got = stitch(x)
    assert got.shape == expected64.shape
    tol = _dot_tol(n_terms, x, stitch.matrix().detach(), stitch.bias.detach())
    assert (got.double() - expected64).abs().max().item() <= tol


# -- each kind against a reference written out here --------------------------------------------------------------

def test_strided_conv_is_a_1x1_stitch_after_space_to_depth():
    stitch = _stitch((3, 8, 6), (5, 4, 3))
    assert stitch.kind.name == "strided_conv" and (stitch.in_features, stitch.out_features) == (12, 5)
    x = torch.randn(4, 3, 8, 6)
    # space to depth by hand: channel (c, i, j) of end pixel (h, w) is front pixel (2h + i, 2w + j) of channel c
    depth = x.double().reshape(4, 3, 4, 2, 3, 2).permute(0, 1, 3, 5, 2, 4).reshape(4, 12, 4, 3)
    _check(stitch, x, _one_by_one(depth, stitch), 12)
    assert stitch.param_dict()["w"].shape == (5, 3, 2, 2)


def test_upsampling_stitch_is_a_1x1_stitch_on_the_repeated_map():
    stitch = _stitch((4, 2, 3), (6, 6, 9))
    assert stitch.kind.name == "upsample_conv1x1" and (stitch.in_features, stitch.out_features) == (4, 6)
    x = torch.randn(3, 4, 2, 3)
    repeated = x.double().repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)
    _check(stitch, x, _one_by_one(repeated, stitch), 4)


@pytest.mark.parametrize("front_hw,end_hw", [((13, 13), (9, 9)), ((4, 4), (9, 9)), ((13, 4), (9, 9)), ((28, 28), (13, 13))])
def test_resample_stitch_is_a_1x1_stitch_after_area_averaging_down_and_nearest_up(front_hw, end_hw):
    stitch = _stitch((3, *front_hw), (5, *end_hw))
    assert stitch.kind.name == "resample_conv1x1"
    x = torch.randn(2, 3, *front_hw)
    down = (min(front_hw[0], end_hw[0]), min(front_hw[1], end_hw[1]))
    resized = nearest_resize(area_average(x.double(), down), end_hw)  # per dimension: average what shrinks, repeat what grows
    _check(stitch, x, _one_by_one(resized, stitch), 3)


def test_pool_linear_is_a_linear_map_of_the_channel_means():
    stitch = _stitch((6, 5, 4), (7,), pool=True)
    assert stitch.kind.name == "pool_linear"
    x = torch.randn(3, 6, 5, 4)
    w, b = stitch.matrix().detach().double(), stitch.bias.detach().double()
    _check(stitch, x, x.double().mean(dim=(2, 3)) @ w.T + b, 6)


def test_feature_map_into_vector_flattens_and_vector_into_feature_map_reshapes():
    into_vector = _stitch((2, 3, 3), (7,))
    into_map = _stitch((7,), (2, 3, 3), seed=1)
    assert into_vector.kind.name == into_map.kind.name == "flatten"
    x = torch.randn(4, 2, 3, 3)
    w, b = into_vector.matrix().detach().double(), into_vector.bias.detach().double()
    _check(into_vector, x, x.double().reshape(4, 18) @ w.T + b, 18)
    v = torch.randn(4, 7)
    w, b = into_map.matrix().detach().double(), into_map.bias.detach().double()
    _check(into_map, v, (v.double() @ w.T + b).reshape(4, 2, 3, 3), 7)


def test_the_shapes_choose_the_kind_and_options_steer_it():
    cases = {((8, 4, 4), (8, 4, 4)): "conv1x1", ((8, 30, 30), (8, 2, 2)): "strided_conv",
             ((8, 2, 2), (8, 4, 4)): "upsample_conv1x1", ((8, 4, 4), (8, 2, 3)): "resample_conv1x1",
             ((8, 13, 13), (8, 9, 9)): "resample_conv1x1", ((8, 6, 4), (8, 3, 1)): "resample_conv1x1",
             ((8,), (5,)): "linear", ((8, 4, 4), (5,)): "flatten", ((5,), (8, 4, 4)): "flatten"}
    for (front, end), kind in cases.items():
        assert choose_kind(front, end).name == kind, (front, end)
    assert choose_kind((8, 4, 4), (5,), pool=True).name == "pool_linear"
    assert choose_kind((8, 4, 4), (8, 2, 2), pool=True).name == "strided_conv"  # --pool only concerns map -> vector
    assert choose_kind((8, 4, 4), (8, 2, 2), flatten=True).name == "flatten"
    with pytest.raises(UserError, match=r"^--flatten and --pool exclude each other"):
        choose_kind((8, 4, 4), (5,), flatten=True, pool=True)
    with pytest.raises(UserError, match=r"no stitch kind maps a 2-d activation \(3x4\) to a 3-d one \(8x4x4\); use --flatten"):
        choose_kind((3, 4), (8, 4, 4))
    with pytest.raises(UserError, match=r"a strided_conv stitch cannot map 8x5x5 to 8x2x2"):
        make_stitch((8, 5, 5), (8, 2, 2), kind="strided_conv")


# -- least squares of each kind recovers the map that generated the data ----------------------------------------

KIND_SHAPES = {
    "conv1x1": ((3, 4, 4), (5, 4, 4)), "strided_conv": ((2, 6, 4), (4, 3, 2)), "upsample_conv1x1": ((3, 2, 2), (4, 6, 6)),
    "resample_conv1x1": ((3, 7, 5), (4, 3, 8)), "linear": ((6,), (4,)), "flatten": ((2, 3, 2), (5,)),
    "pool_linear": ((5, 3, 3), (4,)),
    "tokens": ((17, 3), (65, 4)), "tokens_to_map": ((17, 3), (4, 3, 5)), "map_to_tokens": ((3, 5, 4), (17, 4)),
    "tokens_pool": ((10, 3), (4,)),
}


def test_every_registered_kind_has_a_least_squares_case():
    assert set(KIND_SHAPES) == set(KINDS)


def _generated_fit(kind, seed=0, rank=None, batches=4, n=40):
    """Synthetic front activations, the end network's made by the kind's own (reference-checked) map in float64."""
    front_shape, end_shape = KIND_SHAPES[kind]
    gen = torch.Generator().manual_seed(seed)
    truth = AffineStitch(front_shape, end_shape, kind).double()
    w = torch.randn(truth.out_features, truth.in_features, generator=gen, dtype=torch.float64)
    if rank is not None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        w = (u[:, :rank] * s[:rank]) @ vh[:rank]
    truth.set_affine(w.numpy(), torch.randn(truth.out_features, generator=gen, dtype=torch.float64).numpy())
    fit = LeastSquaresFit()
    with torch.no_grad():
        for _ in range(batches):
            front = torch.randn(n, *front_shape, generator=gen, dtype=torch.float64) + 3.0  # an offset, as activations have
            fit.update(*truth.design(front, truth(front)))
    return truth, fit


def _conditioning_tol(fit: LeastSquaresFit, truth: AffineStitch) -> float:
    """Normal equations in float64: error <= ~ d * cond(X^T X) * eps64 relative to the weights' size."""
    lam = torch.linalg.eigvalsh(fit.cxx)
    cond = float(lam[-1] / lam[0])
    scale = float(truth.matrix().detach().abs().max()) + float(truth.bias.detach().abs().max())
    return 10 * fit.cxx.shape[0] * cond * EPS64 * scale


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_ps_inv_of_every_kind_recovers_the_generating_map(kind):
    truth, fit = _generated_fit(kind)
    stitch = AffineStitch(truth.front_shape, truth.end_shape, kind)
    initialize(stitch, "ps_inv", torch.Generator(), fit)
    tol = _conditioning_tol(fit, truth)
    weights = fit.solve()
    assert np.abs(weights["w"] - truth.matrix().detach().numpy()).max() <= tol
    assert np.abs(weights["b"] - truth.bias.detach().numpy()).max() <= tol
    # the float32 stitch holds the fit rounded to float32
    assert np.abs(stitch.param_dict()["w"].reshape(stitch.out_features, -1) - weights["w"]).max() <= \
        EPS32 * np.abs(weights["w"]).max()


def test_reduced_rank_least_squares_of_a_strided_stitch_recovers_a_rank_2_map():
    truth, fit = _generated_fit("strided_conv", seed=3, rank=2)
    stitch = AffineStitch(truth.front_shape, truth.end_shape, "strided_conv", rank=2)
    initialize(stitch, "ps_inv", torch.Generator(), fit)
    tol = _conditioning_tol(fit, truth) + 4 * stitch.in_features * EPS32 * float(truth.matrix().detach().abs().max())
    assert (stitch.matrix().detach().double() - truth.matrix().detach()).abs().max().item() <= tol


# -- inits, masks, low rank --------------------------------------------------------------------------------------

@pytest.mark.parametrize("init,mask", [("eye", "identity"), ("perm", "identity"), ("ones-zeros", "identity"),
                                       ("random", "semi-match"), ("random", "abs-semi-match"),
                                       ("random", "random-permutation")])
def test_identity_inits_and_masks_are_refused_on_a_strided_stitch_with_one_line(init, mask):
    stitch = make_stitch((4, 4, 4), (16, 2, 2))  # 16 -> 16 patch entries to channels: square, yet not a channel map
    assert stitch.in_features == stitch.out_features == 16
    with pytest.raises(UserError) as err:
        check_options(stitch, init, mask)
    message = str(err.value)
    assert "\n" not in message and "strided_conv" in message and "--init random or ps_inv" in message


def test_channel_maps_of_every_size_keep_eye_and_masks():
    for front, end in (((4, 2, 2), (4, 4, 4)), ((4, 13, 13), (4, 9, 9)), ((4, 3, 3), (4,))):
        stitch = make_stitch(front, end, pool=True)
        check_options(stitch, "eye", "random-permutation")
        initialize(stitch, "eye", torch.Generator())
        assert np.array_equal(stitch.matrix().detach().numpy(), np.eye(4))
        assert build_mask(stitch, "random-permutation", torch.Generator().manual_seed(0)).sum() == 4


def test_eye_through_the_upsampling_stitch_repeats_every_pixel():
    stitch = make_stitch((3, 2, 2), (3, 4, 4))
    initialize(stitch, "eye", torch.Generator())
    x = torch.randn(2, 3, 2, 2)
    assert torch.equal(stitch(x), x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_round_trips_through_its_pickled_weights_low_rank_included(kind):
    front_shape, end_shape = KIND_SHAPES[kind]
    for rank in (None, 2):
        torch.manual_seed(1)
        stitch = AffineStitch(front_shape, end_shape, kind, rank=rank)
        again = make_stitch(front_shape, end_shape, kind=kind, rank=rank)
        again.load_param_dict(stitch.param_dict())
        x = torch.randn(3, *front_shape)
        assert torch.equal(again(x), stitch(x)), (kind, rank)


def test_results_record_their_kind_and_old_results_rebuild_as_then():
    assert recorded_kind({"params": {}, "stitch": {"kind": "strided_conv", "description": "strided_conv: ..."}}) == "strided_conv"
    # before the rename the name was under 'mode' and 'kind' held the description
    assert recorded_kind({"params": {}, "stitch": {"mode": "strided_conv", "kind": "strided_conv: 64x4x4 -> 64x2x2"}}) == "strided_conv"
    assert recorded_kind({"params": {"flatten": True}, "stitch": {"mode": "flatten"}}) == "flatten"
    assert recorded_kind({"params": {"flatten": True}}) == "flatten"
    assert recorded_kind({"params": {"flatten": False}}) is None  # chosen from the shapes: conv1x1 or linear, as then
    for old_mode in ("conv1x1", "linear", "flatten"):
        assert old_mode in KINDS
