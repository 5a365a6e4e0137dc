"""Small parameter-free layers shared by the zoo, so that every step of a forward pass is a named module.

A named module is a layer that hooks can read and stitching can cut at; operations written inline
in ``forward`` (``x + y``, ``torch.cat``, ``x.mean``) are invisible to both.
"""
import torch
from torch import nn


class Add(nn.Module):
    """``x + y``: the residual sum of a ResNet block as its own layer."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


class Concat(nn.Module):
    """Concatenation of its inputs along the channel dimension (the output of an Inception block)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class GlobalAvgPool(nn.Module):
    """Mean over the two spatial dimensions: ``(N, C, H, W) -> (N, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))
