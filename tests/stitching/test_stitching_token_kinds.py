"""The token-sequence stitch kinds (tokens, tokens_to_map, map_to_tokens, tokens_pool): each against a reference
written out here, their least-squares design against the map they apply, the least-squares fit of a planted map,
their choice from the shapes, and a real timm ViT stitched into a torchvision ResNet-18 and back."""

import numpy as np
import pytest
import torch

from tests.math_helpers import area_average, nearest_resize
from src.errors import UserError
from src.similarity import LeastSquaresFit
from src.stitching.affine import AffineStitch
from src.stitching.inits import build_mask, check_options, initialize
from src.stitching.kinds import KINDS, choose_kind, make_kind
from src.stitching.kinds.tokens import token_grid

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
TOKEN_KINDS = ("tokens", "tokens_to_map", "map_to_tokens", "tokens_pool")

# (kind, front shape, end shape): equal N, 8x8 <-> 4x4 grids with a class token and without prefix, the prefix
# rules (p -> p' with equal grids), token sequences with no patch grid, maps of other sizes than the token grid
CASES = [
    ("tokens", (65, 6), (65, 5)), ("tokens", (65, 6), (17, 5)), ("tokens", (17, 6), (65, 5)),
    ("tokens", (64, 6), (16, 5)), ("tokens", (16, 6), (64, 5)), ("tokens", (65, 6), (64, 5)),
    ("tokens", (64, 6), (65, 5)), ("tokens", (69, 6), (66, 5)), ("tokens", (63, 6), (20, 5)),
    ("tokens", (3, 6), (5, 5)), ("tokens", (65, 6), (10, 5)),
    ("tokens_to_map", (65, 6), (5, 8, 8)), ("tokens_to_map", (65, 6), (5, 4, 4)), ("tokens_to_map", (17, 6), (5, 8, 8)),
    ("tokens_to_map", (64, 6), (5, 6, 3)),
    ("map_to_tokens", (5, 8, 8), (65, 6)), ("map_to_tokens", (5, 8, 8), (17, 6)), ("map_to_tokens", (5, 4, 4), (64, 6)),
    ("map_to_tokens", (5, 7, 5), (10, 6)),
    ("tokens_pool", (65, 6), (4,)), ("tokens_pool", (3, 6), (4,)),
]


def _affine(kind, gen, dtype=torch.float64):
    w = torch.randn(kind.out_features, kind.in_features, generator=gen, dtype=dtype)
    return w, torch.randn(kind.out_features, generator=gen, dtype=dtype)


def _tol(eps: float, n: int, k: int, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    """Rounding of ``sum_n w r + b`` where every r averages (or interpolates) up to k entries of x: the average is off
    by <= k eps max|x|, each term of the dot product carries it, and the n + 1 term sum adds (n + 1) eps of its size."""
    wx = float(w.abs().max() * x.abs().max())
    return eps * (n * (n + 1 + k) * wx + (n + 1) * float(b.abs().max()))


# -- the prefix count from N alone -------------------------------------------------------------------------------

def test_the_patch_grid_is_the_largest_square_with_at_most_8_prefix_tokens():
    cases = {65: (1, 8), 64: (0, 8), 197: (1, 14), 201: (5, 14), 198: (2, 14), 72: (8, 8), 9: (0, 3), 17: (1, 4),
             4: (0, 2), 5: (1, 2), 73: None, 63: None, 3: None, 1: None, 0: None}
    for n, grid in cases.items():
        assert token_grid(n) == grid, n


# -- each kind against a reference written out here ---------------------------------------------------------------


def _resized(x: torch.Tensor, size) -> torch.Tensor:
    """As resample_conv1x1 resizes: per dimension, average what shrinks, repeat what grows."""
    down = (min(x.shape[-2], size[0]), min(x.shape[-1], size[1]))
    return nearest_resize(area_average(x, down), size)


def _grid(x: torch.Tensor, p: int, g: int) -> torch.Tensor:
    """Patch tokens ``B x (p + g g) x D`` on their grid ``B x D x g x g``: token p + r g + c is row r, column c."""
    out = torch.empty(x.shape[0], x.shape[2], g, g, dtype=x.dtype)
    for r in range(g):
        for c in range(g):
            out[:, :, r, c] = x[:, p + r * g + c]
    return out


def _tokens(grid: torch.Tensor) -> torch.Tensor:
    """The inverse of ``_grid`` (no prefix): row-major tokens."""
    g_h, g_w = grid.shape[-2:]
    return torch.stack([grid[:, :, r, c] for r in range(g_h) for c in range(g_w)], dim=1)


def _linear_along_tokens(x: torch.Tensor, n_out: int) -> torch.Tensor:
    """End token j at front position j (N - 1) / (N' - 1), linearly interpolated (numpy's interp, per feature)."""
    n = x.shape[1]
    at = np.arange(n_out) * (n - 1) / max(n_out - 1, 1)
    xs = x.numpy()
    out = np.stack([[np.interp(at, np.arange(n), xs[s, :, d]) for d in range(xs.shape[2])] for s in range(xs.shape[0])])
    return torch.from_numpy(out).transpose(1, 2)


def _reference_resampled(kind: str, x: torch.Tensor, front_shape, end_shape) -> torch.Tensor:
    """What W is applied to, in the end's layout with the front's features: tokens ``B x N' x D``, a map ``B x D x H x W``,
    a vector ``B x D``."""
    if kind == "tokens_pool":
        return x.mean(dim=1)
    if kind == "map_to_tokens":
        p, g = token_grid(end_shape[0])
        prefix = x.mean(dim=(2, 3))[:, None, :].repeat(1, p, 1)  # B x p x C: the global average pool, p times
        return torch.cat([prefix, _tokens(_resized(x, (g, g)))], dim=1)
    if kind == "tokens_to_map":
        p, g = token_grid(front_shape[0])
        return _resized(_grid(x, p, g), end_shape[1:])
    n, n_out = front_shape[0], end_shape[0]
    if n == n_out:
        return x
    if token_grid(n) is None or token_grid(n_out) is None:
        return _linear_along_tokens(x, n_out)
    (p, g), (q, h) = token_grid(n), token_grid(n_out)
    if p == q:
        prefix = x[:, :p]
    elif p == 0:
        prefix = x.mean(dim=1, keepdim=True).repeat(1, q, 1)  # the mean of the patch tokens into every end prefix token
    else:
        prefix = x[:, :1].repeat(1, q, 1)  # the front's first prefix (class) token into every end prefix token
    return torch.cat([prefix, _tokens(_resized(_grid(x, p, g), (h, h)))], dim=1)


def _apply(w: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """W and b on the feature axis of the resampled front: last for tokens and vectors, 1 for a map."""
    if r.dim() == 4:
        return torch.einsum("oc,nchw->nohw", w, r) + b[None, :, None, None]
    return r @ w.T + b


def _averaged_terms(kind, front_shape, end_shape) -> int:
    """The most front entries one resampled entry averages: a prefix (or pooled) token, a pooled map, an area window."""
    if kind == "tokens_pool":
        return front_shape[0]
    if kind == "map_to_tokens":
        return front_shape[1] * front_shape[2]
    if kind == "tokens" and token_grid(front_shape[0]) is None:
        return 2
    return front_shape[0]  # a generous bound for the area windows and the mean of the patch tokens


@pytest.mark.parametrize("kind,front_shape,end_shape", CASES, ids=[f"{k}-{f}-{e}" for k, f, e in CASES])
def test_every_token_kind_applies_the_map_written_out_here(kind, front_shape, end_shape):
    stitch = make_kind(front_shape, end_shape, kind=kind)
    gen = torch.Generator().manual_seed(0)
    w, b = _affine(stitch, gen, torch.float32)
    x = torch.randn(3, *front_shape, generator=gen)
    expected = _apply(w.double(), b.double(), _reference_resampled(kind, x.double(), front_shape, end_shape))
    got = stitch.forward(x, w, b)
    assert got.shape == (3, *end_shape) == expected.shape
    k = _averaged_terms(kind, front_shape, end_shape)
    assert (got.double() - expected).abs().max().item() <= _tol(EPS32, stitch.in_features, k, x, w, b)


def test_the_class_token_goes_to_the_class_token_and_the_patch_grid_is_averaged_2x2():
    """65 = 1 + 8x8 tokens into 17 = 1 + 4x4 with W = I, b = 0: token 0 kept, patch (r, c) the mean of its 2x2 block."""
    stitch = make_kind((65, 3), (17, 3))
    x = torch.randn(2, 65, 3, dtype=torch.float64)
    y = stitch.forward(x, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(y[:, 0], x[:, 0])
    patches = x[:, 1:].reshape(2, 8, 8, 3)
    block = (patches[:, 2:4, 4:6].sum(dim=(1, 2)) / 4)  # end patch (1, 2)
    assert torch.allclose(y[:, 1 + 1 * 4 + 2], block, rtol=0, atol=8 * EPS64 * float(x.abs().max()))
    back = make_kind((17, 3), (65, 3)).forward(y, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(back[:, 0], y[:, 0]) and torch.equal(back[:, 1 + 5 * 8 + 3], y[:, 1 + 2 * 4 + 1])  # nearest


# -- the least-squares design reproduces forward ------------------------------------------------------------------

@pytest.mark.parametrize("kind,front_shape,end_shape", CASES, ids=[f"{k}-{f}-{e}" for k, f, e in CASES])
def test_the_design_rows_reproduce_forward(kind, front_shape, end_shape):
    stitch = make_kind(front_shape, end_shape, kind=kind)
    gen = torch.Generator().manual_seed(1)
    w, b = _affine(stitch, gen)
    front = torch.randn(4, *front_shape, generator=gen, dtype=torch.float64)
    end = stitch.forward(front, w, b)
    rows_x, rows_y = stitch.design(front, end)
    assert rows_x.shape[1] == stitch.in_features and rows_y.shape == (rows_x.shape[0], stitch.out_features)
    # rows_y is end laid out as rows: one row per end token (tokens), pixel (map) or sample (vector)
    layout = end.movedim(1, -1) if end.dim() == 4 else end
    assert torch.equal(rows_y, layout.reshape(-1, stitch.out_features))
    tol = _tol(EPS64, stitch.in_features, 0, front, w, b)
    assert (rows_x @ w.T + b - rows_y).abs().max().item() <= tol


# -- least squares through the design recovers a planted map ------------------------------------------------------

@pytest.mark.parametrize("kind,front_shape,end_shape", CASES, ids=[f"{k}-{f}-{e}" for k, f, e in CASES])
def test_least_squares_on_the_design_recovers_the_planted_map(kind, front_shape, end_shape):
    stitch = make_kind(front_shape, end_shape, kind=kind)
    gen = torch.Generator().manual_seed(2)
    w_true, b_true = _affine(stitch, gen)
    front = torch.randn(40, *front_shape, generator=gen, dtype=torch.float64) + 3.0  # an offset, as activations have
    rows_x, rows_y = stitch.design(front, stitch.forward(front, w_true, b_true))
    x1 = np.hstack([rows_x.numpy(), np.ones((rows_x.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(x1, rows_y.numpy(), rcond=None)
    assert np.abs(coef[:-1].T - w_true.numpy()).max() <= 1e-8
    assert np.abs(coef[-1] - b_true.numpy()).max() <= 1e-8


def test_every_token_kind_is_registered_and_has_cases():
    assert set(TOKEN_KINDS) <= set(KINDS)
    assert {kind for kind, _, _ in CASES} == set(TOKEN_KINDS)


# -- the choice of kind --------------------------------------------------------------------------------------------

def test_token_shapes_choose_the_token_kinds_and_old_shapes_their_old_kinds():
    old = {((8, 4, 4), (8, 4, 4)): "conv1x1", ((8, 30, 30), (8, 2, 2)): "strided_conv",
           ((8, 2, 2), (8, 4, 4)): "upsample_conv1x1", ((8, 4, 4), (8, 2, 3)): "resample_conv1x1",
           ((8, 13, 13), (8, 9, 9)): "resample_conv1x1", ((8, 6, 4), (8, 3, 1)): "resample_conv1x1",
           ((8,), (5,)): "linear", ((8, 4, 4), (5,)): "flatten", ((5,), (8, 4, 4)): "flatten"}
    new = {((65, 192), (65, 192)): "tokens", ((65, 192), (17, 96)): "tokens", ((63, 8), (20, 4)): "tokens",
           ((65, 192), (64, 8, 8)): "tokens_to_map", ((64, 8, 8), (65, 192)): "map_to_tokens",
           ((65, 192), (10,)): "flatten", ((10,), (65, 192)): "flatten"}
    for (front, end), kind in {**old, **new}.items():
        assert choose_kind(front, end).name == kind, (front, end)
    assert choose_kind((8, 4, 4), (5,), pool=True).name == "pool_linear"
    assert choose_kind((65, 192), (10,), pool=True).name == "tokens_pool"
    assert choose_kind((65, 192), (17, 96), pool=True).name == "tokens"  # --pool only concerns -> vector
    for front, end in (((65, 192), (17, 96)), ((65, 192), (64, 8, 8)), ((64, 8, 8), (65, 192))):
        assert choose_kind(front, end, flatten=True).name == "flatten"


def test_token_sequences_without_a_patch_grid_are_refused_by_the_map_kinds():
    with pytest.raises(UserError, match=r"no stitch kind maps a 2-d activation \(3x4\) to a 3-d one \(8x4x4\); use --flatten"):
        choose_kind((3, 4), (8, 4, 4))
    with pytest.raises(UserError, match=r"no stitch kind maps a 3-d activation \(8x4x4\) to a 2-d one \(63x4\)"):
        choose_kind((8, 4, 4), (63, 4))
    with pytest.raises(UserError, match=r"a tokens_to_map stitch cannot map 63x4 to 8x4x4: the front's 63 tokens form "
                                        r"no square patch grid .* here 14\)"):
        make_kind((63, 4), (8, 4, 4), kind="tokens_to_map")
    with pytest.raises(UserError, match=r"a tokens stitch cannot map 8x4x4 to 65x4: it maps a token sequence"):
        make_kind((8, 4, 4), (65, 4), kind="tokens")


# -- the stitch layer with a token kind ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind,front_shape,end_shape", [("tokens", (65, 6), (17, 5)), ("tokens_to_map", (65, 6), (5, 4, 4)),
                                                        ("map_to_tokens", (5, 8, 8), (65, 6)), ("tokens_pool", (65, 6), (4,))])
def test_affine_stitch_takes_the_token_kinds_and_round_trips_its_weights(kind, front_shape, end_shape):
    for rank in (None, 2):
        torch.manual_seed(0)
        stitch = AffineStitch(front_shape, end_shape, kind, rank)
        assert stitch.kind.name == kind and stitch.kind.channel_map
        assert stitch.param_dict()["w"].shape == (stitch.out_features, stitch.in_features)
        again = AffineStitch(front_shape, end_shape, kind, rank)
        again.load_param_dict(stitch.param_dict())
        x = torch.randn(3, *front_shape)
        assert stitch(x).shape == (3, *end_shape) and torch.equal(again(x), stitch(x))


def test_eye_on_a_tokens_stitch_is_the_identity_and_masks_are_defined():
    stitch = AffineStitch((65, 6), (65, 6), "tokens")
    check_options(stitch, "eye", "random-permutation")
    initialize(stitch, "eye", torch.Generator())
    x = torch.randn(2, 65, 6)
    assert torch.equal(stitch(x), x)
    assert build_mask(stitch, "random-permutation", torch.Generator().manual_seed(0)).sum() == 6


def test_ps_inv_through_the_stitch_recovers_a_planted_tokens_to_map():
    gen = torch.Generator().manual_seed(3)
    truth = AffineStitch((65, 6), (5, 4, 4), "tokens_to_map").double()
    truth.set_affine(*(t.numpy() for t in _affine(truth.kind, gen)))
    fit = LeastSquaresFit()
    with torch.no_grad():
        for _ in range(3):
            front = torch.randn(20, 65, 6, generator=gen, dtype=torch.float64) + 3.0
            fit.update(*truth.design(front, truth(front)))
    weights = fit.solve()
    assert np.abs(weights["w"] - truth.matrix().detach().numpy()).max() <= 1e-8
    assert np.abs(weights["b"] - truth.bias.detach().numpy()).max() <= 1e-8
    stitch = AffineStitch((65, 6), (5, 4, 4), "tokens_to_map")
    initialize(stitch, "ps_inv", torch.Generator(), fit)
    assert np.abs(stitch.param_dict()["w"] - weights["w"]).max() <= EPS32 * np.abs(weights["w"]).max()


# -- a real ViT into a real ResNet and back ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit_and_resnet():
    timm = pytest.importorskip("timm")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10, depth=2)
    resnet = torchvision.models.resnet18(num_classes=10)
    return vit.eval(), resnet.eval()


def _vit_blocks0(vit, images):
    return vit.blocks[0](vit.norm_pre(vit._pos_embed(vit.patch_embed(images))))


def _resnet_layer1(resnet, images):
    return resnet.layer1(resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images)))))


def test_timm_vit_tokens_have_the_grid_the_rule_infers(vit_and_resnet):
    vit, _ = vit_and_resnet
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = _vit_blocks0(vit, images)
        hooked = {}
        handle = vit.blocks[0].register_forward_hook(lambda module, args, out: hooked.setdefault("out", out))
        vit(images)
        handle.remove()
    assert tokens.shape == (2, 65, 192) and torch.equal(hooked["out"], tokens)
    assert token_grid(65) == (vit.num_prefix_tokens, vit.patch_embed.grid_size[0]) == (1, 8)


def test_a_vit_stitches_into_a_resnet_and_back(vit_and_resnet):
    vit, resnet = vit_and_resnet
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        tokens, fmap = _vit_blocks0(vit, images), _resnet_layer1(resnet, images)
    assert tuple(tokens.shape[1:]) == (65, 192) and tuple(fmap.shape[1:]) == (64, 8, 8)

    into_resnet = make_kind((65, 192), (64, 8, 8))
    into_vit = make_kind((64, 8, 8), (65, 192))
    assert (into_resnet.name, into_vit.name) == ("tokens_to_map", "map_to_tokens")
    assert (into_resnet.in_features, into_resnet.out_features) == (192, 64) and into_vit.features() == (64, 192)
    rows_x, rows_y = into_resnet.design(tokens, fmap)
    assert rows_x.shape == (4 * 64, 192) and rows_y.shape == (4 * 64, 64)
    rows_x, rows_y = into_vit.design(fmap, tokens)
    assert rows_x.shape == (4 * 65, 64) and rows_y.shape == (4 * 65, 192)

    forward_stitch = AffineStitch((65, 192), (64, 8, 8), into_resnet.name)
    back_stitch = AffineStitch((64, 8, 8), (65, 192), into_vit.name)
    with torch.no_grad():
        stitched = forward_stitch(tokens)
        assert stitched.shape == (4, 64, 8, 8)
        logits = resnet.fc(torch.flatten(resnet.avgpool(resnet.layer4(resnet.layer3(resnet.layer2(stitched)))), 1))
        assert logits.shape == (4, 10)
        stitched = back_stitch(fmap)
        assert stitched.shape == (4, 65, 192)
        logits = vit.forward_head(vit.norm(vit.blocks[1](stitched)))
        assert logits.shape == (4, 10)
