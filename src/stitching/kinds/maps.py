"""Feature map into feature map through a 1x1 convolution: same size, or resampled to the end network's size.

- ``conv1x1``: equal H x W; a 1x1 convolution (channel to channel, every pixel alike).
- ``upsample_conv1x1``: the end is larger by an integer factor k in both H and W; nearest
  upsampling by k (every front pixel repeated into a k x k block), then a 1x1 convolution.
- ``resample_conv1x1``: any other pair of sizes; the front map is resampled to the end network's
  H x W, then a 1x1 convolution. Each dimension is resampled on its own: a dimension that shrinks
  is area-averaged (``F.adaptive_avg_pool2d``: output pixel i averages input pixels
  floor(i*in/out) .. ceil((i+1)*in/out)-1, so windows overlap when the ratio is not an integer),
  a dimension that grows takes the nearest pixel (``F.interpolate(mode='nearest')``: input pixel
  floor(i*in/out)). A mixed pair (one dimension up, the other down) is first averaged down in the
  shrinking dimension, then nearest-upsampled in the growing one.

Averaging and nearest resampling act on each channel alone and their weights sum to one, so they
commute with a 1x1 convolution including its bias; ``forward`` therefore runs the convolution at
the smaller resolution (after averaging, before upsampling), the least-squares design resamples the
front map to the end network's size first - the same map, up to float rounding.
"""
from typing import ClassVar, Optional, Sequence

import torch
from torch.nn import functional as F

from src.stitching.kinds.base import Shape, StitchKind, pixel_rows


def both_maps(front_shape: Shape, end_shape: Shape) -> Optional[str]:
    if len(front_shape) != 3 or len(end_shape) != 3:
        return "it maps a feature map (C x H x W) into a feature map"
    return None


def average_down(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Area-average every dimension of ``x`` that is larger than ``size`` down to it (others unchanged)."""
    h, w = x.shape[-2:]
    target = (min(h, size[0]), min(w, size[1]))
    return x if target == (h, w) else F.adaptive_avg_pool2d(x, target)


def nearest_up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-upsample ``x`` (already no larger than ``size`` in either dimension) to ``size``."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=tuple(size), mode="nearest")


def resample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``x`` resampled to ``size`` (H, W): area averaging where it shrinks, nearest where it grows."""
    return nearest_up(average_down(x, size), size)


class Conv1x1(StitchKind):
    name = "conv1x1"
    summary = "feature map into a feature map of the same H x W: 1x1 convolution"

    @classmethod
    def misfit(cls, front_shape, end_shape):
        why = both_maps(front_shape, end_shape)
        if why is None and front_shape[1:] != end_shape[1:]:
            why = "a 1x1 stitch needs equal H x W (feature maps of different spatial size)"
        return why

    @property
    def weight_shape(self):
        return (self.out_features, self.in_features, 1, 1)

    def forward(self, x, w, b):
        return F.conv2d(x, w[:, :, None, None], b)

    def design(self, front, end):
        return pixel_rows(front), pixel_rows(end)


class ResampleConv1x1(Conv1x1):
    name = "resample_conv1x1"
    summary = ("feature maps of any other sizes: resample to the end network's H x W (area averaging down, "
               "nearest up, per dimension), then 1x1 convolution")

    @classmethod
    def misfit(cls, front_shape, end_shape):
        return both_maps(front_shape, end_shape)

    def forward(self, x, w, b):
        size = self.end_shape[1:]
        return nearest_up(super().forward(average_down(x, size), w, b), size)

    def design(self, front, end):
        return pixel_rows(resample(front, self.end_shape[1:])), pixel_rows(end)


def integer_ratio(large: Shape, small: Shape) -> Optional[int]:
    """k >= 2 when ``large``'s H and W are both exactly k times ``small``'s, else None."""
    (h1, w1), (h2, w2) = large[1:], small[1:]
    if h2 <= 0 or w2 <= 0 or h1 % h2 or w1 % w2 or h1 // h2 != w1 // w2 or h1 // h2 < 2:
        return None
    return h1 // h2


class IntegerScale:
    """Mixin of the kinds whose two feature maps differ by one integer factor k >= 2 in H and W
    (``front_larger``: the front network's map is the larger one)."""

    front_larger: ClassVar[bool] = True

    @classmethod
    def ratio(cls, front_shape: Shape, end_shape: Shape) -> Optional[int]:
        return integer_ratio(front_shape, end_shape) if cls.front_larger else integer_ratio(end_shape, front_shape)

    @classmethod
    def misfit(cls, front_shape, end_shape):
        why = both_maps(front_shape, end_shape)
        if why is None and cls.ratio(front_shape, end_shape) is None:
            large, small = ("front", "end") if cls.front_larger else ("end", "front")
            why = f"the {large}'s H and W must both be the same integer multiple k >= 2 of the {small}'s"
        return why

    @property
    def factor(self) -> int:
        return self.ratio(self.front_shape, self.end_shape)


class UpsampleConv1x1(IntegerScale, ResampleConv1x1):
    name = "upsample_conv1x1"
    summary = "end larger by an integer factor k in H and W: nearest upsampling by k, then 1x1 convolution"
    front_larger = False

    def describe(self) -> str:
        return f"{super().describe()} (nearest upsampling by {self.factor})"
