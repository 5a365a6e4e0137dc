"""Batched augmentations: whole-batch tensor ops, one random draw per sample.

Each ``random_*`` function draws its parameters from the given ``torch.Generator`` (on the CPU,
so a seed gives the same augmentations on any device) and calls a deterministic function that
takes the parameters explicitly, which is what the tests exercise.

The reference applied the same augmentations per sample through PIL:

- CIFAR: ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``. :func:`random_crop_flip`
  reproduces it exactly (zero padding, integer offsets 0..8, flip with probability 1/2).
- MNIST-likes: ``Pad(4, edge) -> RandomAffine(5, scale=(0.9, 1.1), shear=5, fill=0) ->
  CenterCrop(32)``. :func:`random_affine` draws the same parameters (rotation and x-shear
  uniform in +-5 degrees, scale uniform in [0.9, 1.1]), builds the same inverse matrix about the
  image centre and samples with nearest-neighbour interpolation, as RandomAffine does. The one
  difference: outside the image it repeats the edge pixels indefinitely (``padding_mode='border'``),
  where the reference repeated them for 4 pixels and read 0 beyond. Within these parameter ranges
  at most 2 corner pixels of an image (at the extreme rotation, shear and scale) sample farther
  than 4 pixels out, and the edges of MNIST-like images are almost always background (0) anyway.
  The sampling grid equals ``F.affine_grid``'s but is one 2-D matrix product
  (:func:`sampling_grid`, several times faster on CPU); the resampling is ``F.grid_sample``.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop every image of ``x`` (N, C, H, W) at its own offset from a zero-padded copy, and mirror some.

    Sample ``i`` is ``pad(x[i], padding)[:, top[i]:top[i]+H, left[i]:left[i]+W]``, flipped left-right
    where ``flip[i]``. Offsets lie in ``0..2*padding``; ``top = left = padding`` and no flip is
    the identity. Works for any dtype; one ``torch.gather`` for the whole batch.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding)).view(n, c, -1)
    device = x.device
    top, left, flip = top.to(device), left.to(device), flip.to(device)
    rows = top[:, None] + torch.arange(h, device=device)
    columns = torch.arange(w, device=device)
    columns = left[:, None] + torch.where(flip[:, None], columns.flip(0), columns)
    # Flat positions in the padded (H + 2p) x (W + 2p) planes, shared by the channels of a sample.
    flat = rows[:, :, None] * (w + 2 * padding) + columns[:, None, :]
    return torch.gather(padded, 2, flat.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with ``padding`` zero pixels on each side, then a random horizontal flip (p=1/2)."""
    n = len(x)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return crop_flip(x, top, left, flip, padding)


def affine_matrices(angle: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Sampling matrices (N, 2, 3), as for ``F.affine_grid``, of a rotation-scale-shear about the centre.

    The forward map in pixel coordinates (x right, y down) is ``scale * R(angle) @ Sx(shear)`` with
    ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` and ``Sx(s) = [[1, -tan s], [0, 1]]`` (degrees),
    torchvision's ``affine`` convention. Sampling needs the inverse, output -> input,
    ``Sx(s)^-1 @ R(-a) / scale``, expressed in the normalised coordinates of an (H, W) image.
    """
    a, s = torch.deg2rad(angle.double()), torch.deg2rad(shear.double())
    cos, sin, tan = torch.cos(a), torch.sin(a), torch.tan(s)
    inverse = torch.stack(
        [
            torch.stack([cos - tan * sin, sin + tan * cos], -1),
            torch.stack([-sin, cos], -1),
        ],
        -2,
    ) / scale.double()[:, None, None]
    h, w = size
    inverse[:, 0, 1] *= h / w
    inverse[:, 1, 0] *= w / h
    return torch.cat([inverse, torch.zeros(len(angle), 2, 1, dtype=inverse.dtype)], -1).float()


def sampling_grid(theta: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``F.affine_grid(theta, (N, C, H, W), align_corners=False)`` computed as one 2-D matrix product.

    Same (N, H, W, 2) grid of input coordinates for the output pixel centres, several times faster
    on CPU than ``affine_grid``'s batched product over tiny matrices.
    """
    h, w = size
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    base = torch.stack([xs.repeat(h), ys.repeat_interleave(w), torch.ones_like(xs).repeat(h)])  # (3, H*W)
    return (theta.reshape(-1, 3) @ base).view(len(theta), 2, h, w).permute(0, 2, 3, 1)


def apply_affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample float images ``x`` (N, C, H, W) with sampling matrices ``theta`` (N, 2, 3).

    Nearest-neighbour, edge pixels repeated outside the image, ``align_corners=False`` (pixel
    centres at half-integers, as PIL and torchvision's ``affine`` use).
    """
    grid = sampling_grid(theta.to(x.device, x.dtype), tuple(x.shape[-2:]))
    return F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 5.0,
    scale: Tuple[float, float] = (0.9, 1.1),
    shear: float = 5.0,
) -> torch.Tensor:
    """One random affine map per image: rotation U(-degrees, degrees), scale U(*scale), x-shear U(-shear, shear)."""
    n = len(x)
    angle = torch.empty(n, dtype=torch.float64).uniform_(-degrees, degrees, generator=generator)
    factor = torch.empty(n, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    shear_x = torch.empty(n, dtype=torch.float64).uniform_(-shear, shear, generator=generator)
    return apply_affine(x, affine_matrices(angle, factor, shear_x, tuple(x.shape[-2:])))


def normalize(x: torch.Tensor, mean: Tuple[float, ...], std: Tuple[float, ...]) -> torch.Tensor:
    """float32 ``(x / 255 - mean) / std`` per channel for images ``x`` (N, C, H, W) in 0..255."""
    shape = (1, len(mean), 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(shape)
    return (x.float() - 255 * mean_t) / (255 * std_t)
