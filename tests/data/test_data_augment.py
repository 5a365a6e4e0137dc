"""Batched augmentations: identity parameters, real shifts/flips, agreement with torchvision."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from src.data.augment import (affine_matrices, apply_affine, crop_flip, normalize, random_affine, random_crop_flip,
                               sampling_grid)


def _images(n=6, c=3, h=32, w=32, seed=0):
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed)).float()


def _full(n, value, dtype=torch.int64):
    return torch.full((n,), value, dtype=dtype)


def test_crop_flip_identity():
    x = _images()
    out = crop_flip(x, _full(6, 4), _full(6, 4), _full(6, False, torch.bool), padding=4)
    assert torch.equal(out, x)


def test_crop_offset_shifts_pixels_and_pads_with_zeros():
    x = _images(n=2).to(torch.uint8)
    top, left = torch.tensor([1, 8]), torch.tensor([6, 0])
    out = crop_flip(x, top, left, torch.tensor([False, False]), padding=4)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i in range(2):
        t, l_ = int(top[i]), int(left[i])
        np.testing.assert_array_equal(out[i].numpy(), padded[i, :, t:t + 32, l_:l_ + 32])
    # top=1: the first 3 rows come from the zero padding; left=6: shifted 2 columns to the left.
    assert (out[0, :, :3] == 0).all() and torch.equal(out[0, :, 3:, :30], x[0, :, :29, 2:])
    assert out.dtype == torch.uint8


def test_flip_reverses_columns():
    x = _images(n=3)
    flip = torch.tensor([True, False, True])
    out = crop_flip(x, _full(3, 4), _full(3, 4), flip, padding=4)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1]) and torch.equal(out[2], x[2].flip(-1))


def test_random_crop_flip_is_one_of_the_allowed_crops():
    x = _images(n=20).to(torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(3), padding=4)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    found_flip = found_shift = False
    for i in range(20):
        matches = [(t, l_, f) for t in range(9) for l_ in range(9) for f in (False, True)
                   if np.array_equal(out[i].numpy(), (lambda c: c[..., ::-1] if f else c)(padded[i, :, t:t + 32, l_:l_ + 32]))]
        assert matches, f"sample {i} is not a 32x32 crop (optionally flipped) of the padded image"
        found_flip |= any(f for _, _, f in matches)
        found_shift |= any((t, l_) != (4, 4) for t, l_, _ in matches)
    assert found_flip and found_shift


def _affine(x, angle, scale, shear):
    n = len(x)
    theta = affine_matrices(torch.full((n,), float(angle)), torch.full((n,), float(scale)),
                            torch.full((n,), float(shear)), tuple(x.shape[-2:]))
    return apply_affine(x, theta)


def test_affine_identity_parameters_give_back_the_input():
    x = _images(c=1)
    assert torch.equal(_affine(x, 0, 1, 0), x)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(random_affine(x, gen, degrees=0.0, scale=(1.0, 1.0), shear=0.0), x)


@pytest.mark.parametrize("size", [(32, 32), (20, 28)])
def test_sampling_grid_equals_affine_grid(size):
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = F.affine_grid(theta, [5, 1, *size], align_corners=False)
    torch.testing.assert_close(sampling_grid(theta, size), expected, atol=1e-6, rtol=0)


def test_affine_quarter_turn_is_a_clockwise_rot90():
    """Positive angles turn clockwise on screen (y down), torchvision's convention; exact on the pixel grid."""
    x = _images(c=2)
    assert torch.equal(_affine(x, 90, 1, 0), torch.rot90(x, k=-1, dims=(-2, -1)))


@pytest.mark.parametrize("angle,scale,shear", [(4.0, 0.92, -3.0), (-5.0, 1.1, 5.0), (2.5, 1.0, 0.0), (0.0, 0.9, 4.0)])
def test_affine_matches_torchvision(angle, scale, shear):
    """Same parameters as torchvision's affine (nearest); images with a zero border, so padding agrees."""
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 4:-4, 4:-4] = _images(n=4, c=1, h=24, w=24)
    ours = _affine(x, angle, scale, shear)
    theirs = TF.affine(x, angle=angle, translate=[0, 0], scale=scale, shear=[shear, 0.0],
                       interpolation=InterpolationMode.NEAREST)
    assert (ours == theirs).float().mean() > 0.99


def test_random_affine_shapes_values_and_determinism():
    x = _images(n=64, c=1)
    a = random_affine(x, torch.Generator().manual_seed(5))
    b = random_affine(x, torch.Generator().manual_seed(5))
    c = random_affine(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    # nearest-neighbour resampling only copies pixels: every output value occurs in its input image
    for i in range(64):
        assert torch.isin(a[i], x[i]).all()
    assert sum(not torch.equal(a[i], x[i]) for i in range(64)) > 48  # tiny draws can round to the identity


def test_augmentations_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    random_affine(_images(c=1), torch.Generator().manual_seed(0))
    random_crop_flip(_images(), torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())


def test_normalize_matches_to_tensor_then_normalize():
    x = _images(n=2).to(torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    expected = TF.normalize(x.float() / 255, mean, std)
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
