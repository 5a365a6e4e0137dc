"""Stitches for transformer token sequences: tokens into tokens, tokens into a feature map and back, tokens into a vector.

A token activation is ``N x D`` (batch excluded; timm's ViT blocks output ``B x N x D``): ``p`` prefix
tokens (the class token, a distillation token, registers; timm puts the class token first) followed by
the ``g x g`` patch tokens in row-major order (token ``p + r*g + c`` is patch row r, column c).

The prefix count is inferred from N alone: ``g = floor(sqrt(N))``, ``p = N - g*g``; N has a *patch
grid* when ``g >= 2`` and ``0 <= p <= 8`` (:func:`token_grid`). E.g. 65 = 1 + 8x8 (timm's ViT with a
class token on a 32x32 image in 4x4 patches), 197 = 1 + 14x14, 201 = 5 + 14x14 (class token and four
registers), 64 = 0 + 8x8 (no prefix). The rule takes the largest square that fits, so 9 is 0 + 3x3 (not
5 + 2x2), and N below 4 or with more than 8 tokens left over (e.g. 63 = 14 + 7x7, a non-square grid
such as 14 x 20 + 1) has no patch grid.

- ``tokens``: ``N x D -> N' x D'``: every token through one Linear layer ``D -> D'`` (W is D' x D),
  after the token axis is resampled from N to N' (nothing to resample when ``N == N'``: token i goes to
  token i). When both N and N' have a patch grid, the patch grid is resampled to the end's grid as
  ``resample_conv1x1`` resamples a feature map (:func:`src.stitching.kinds.maps.resample`: area
  averaging where it shrinks, nearest where it grows) and the prefix tokens are mapped prefix to
  prefix: one to one when ``p == p'``; else, every end prefix token takes the front's first prefix
  token (its class token) when ``p >= 1``, or the mean of the front's patch tokens (their global
  average pool, as ``map_to_tokens``) when ``p == 0``; front prefix tokens beyond those are dropped
  (all of them when ``p' == 0``). When either side has no patch grid, the whole sequence is resampled
  along the token axis by linear interpolation with the end tokens at the ends (``align_corners=True``:
  end token j sits at front position ``j (N - 1) / (N' - 1)``, so the first and last tokens map to the
  first and last; a single end token is the first front token).
- ``tokens_to_map``: ``N x D -> C x H x W`` (N with a patch grid): the prefix tokens are dropped (a
  feature map has no place for them), the patch tokens laid out on their ``g x g`` grid, resampled
  to ``H x W`` like ``resample_conv1x1``, then a 1x1 map ``D -> C``.
- ``map_to_tokens``: ``C x H x W -> N x D`` (N with a patch grid): the map resampled to the end's
  ``g x g`` grid like ``resample_conv1x1`` and flattened row-major into the patch tokens; every prefix
  token is the global average pool of the (whole, not resampled) map; then every token through one
  ``C -> D`` map W.
- ``tokens_pool`` (``--pool``): ``N x D -> D'``: the mean of all N tokens (prefix tokens included,
  no grid needed), then a Linear layer. Without ``--pool`` a token sequence goes into a vector by
  ``flatten`` (as a feature map does), and a vector into a token sequence by ``flatten`` too.

Every resampling here (area averaging, nearest, linear interpolation, the prefix rules, the mean)
weighs front tokens by weights that sum to one, so it commutes with the affine map including its bias:
the least-squares design resamples the front tokens (or map) to the end's layout and takes one row per
end token (or pixel); ``forward`` applies W to the same rows. W maps features to features one to one in
all four (``channel_map``: the identity, permutations and masks are defined). The weight is stored
``(out, in)`` in the result pickle.
"""
import math
from typing import Optional, Tuple

import torch
from torch.nn import functional as F

from src.stitching.kinds.base import StitchKind, StitchOptions, pixel_rows
from src.stitching.kinds.maps import average_down, nearest_up, resample

MAX_PREFIX = 8  # the most prefix tokens a patch grid may carry (class, distillation and register tokens)


def token_grid(n: int) -> Optional[Tuple[int, int]]:
    """``(p, g)`` with ``n = p + g*g``, ``g = floor(sqrt(n))``, when ``g >= 2`` and ``p <= 8``; else None (no patch grid)."""
    g = math.isqrt(n) if n > 0 else 0
    p = n - g * g
    return (p, g) if g >= 2 and p <= MAX_PREFIX else None


def describe_grid(n: int) -> str:
    """E.g. ``1 + 8x8`` or ``no grid``."""
    grid = token_grid(n)
    return "no grid" if grid is None else f"{grid[0]} + {grid[1]}x{grid[1]}"


def _grid_misfit(side: str, n: int) -> Optional[str]:
    if token_grid(n) is not None:
        return None
    g = math.isqrt(n) if n > 0 else 0
    return (f"the {side}'s {n} tokens form no square patch grid (N = p + g*g with g = floor(sqrt(N)) = {g} needs "
            f"g >= 2 and at most {MAX_PREFIX} prefix tokens p, here {n - g * g})")


def patch_grid(x: torch.Tensor, p: int, g: int) -> torch.Tensor:
    """``B x (p + g*g) x D`` tokens -> ``B x D x g x g``: the patch tokens on their grid (prefix dropped)."""
    return x[:, p:].transpose(1, 2).reshape(x.shape[0], x.shape[2], g, g)


def grid_tokens(x: torch.Tensor) -> torch.Tensor:
    """``B x D x h x w`` -> ``B x (h*w) x D``: row-major tokens (timm's patch order)."""
    return x.flatten(2).transpose(1, 2)


def prefix_tokens(x: torch.Tensor, p: int, p_out: int) -> torch.Tensor:
    """The end's ``p_out`` prefix tokens from the front's ``B x N x D`` tokens with ``p`` prefix tokens:
    one to one when ``p == p_out``, else the first front prefix token (``p >= 1``) or the mean of the
    patch tokens (``p == 0``) repeated."""
    if p == p_out:
        return x[:, :p]
    source = x[:, :1] if p >= 1 else x.mean(dim=1, keepdim=True)
    return source.expand(-1, p_out, -1)


def resample_tokens(x: torch.Tensor, n_out: int) -> torch.Tensor:
    """``B x N x D`` -> ``B x N' x D`` by the ``tokens`` kind's rules (module docstring)."""
    n = x.shape[1]
    if n == n_out:
        return x
    front, end = token_grid(n), token_grid(n_out)
    if front is None or end is None:
        lined = F.interpolate(x.transpose(1, 2), size=n_out, mode="linear", align_corners=True)
        return lined.transpose(1, 2)
    (p, g), (p_out, g_out) = front, end
    patches = x[:, p:] if g == g_out else grid_tokens(resample(patch_grid(x, p, g), (g_out, g_out)))
    return torch.cat([prefix_tokens(x, p, p_out), patches], dim=1)


def tokens_of_map(x: torch.Tensor, n_out: int) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x N' x C`` (the ``map_to_tokens`` layout): the global average pool for every
    prefix token, then the map resampled to the end's patch grid, row-major."""
    p, g = token_grid(n_out)
    prefix = x.mean(dim=(2, 3))[:, None, :].expand(-1, p, -1)
    return torch.cat([prefix, grid_tokens(resample(x, (g, g)))], dim=1)


def token_rows(t: torch.Tensor) -> torch.Tensor:
    """``B x N x D`` -> ``(B*N) x D``: every token of every sample is one row."""
    return t.reshape(-1, t.shape[-1])


class Tokens(StitchKind):
    name = "tokens"
    summary = ("token sequence into token sequence: the tokens resampled to N' (patch grid and prefix tokens, or "
               "linear along the tokens), then one Linear layer on every token")

    @classmethod
    def misfit(cls, front_shape, end_shape):
        if len(front_shape) != 2 or len(end_shape) != 2:
            return "it maps a token sequence (N x D) into a token sequence"
        return None

    def features(self) -> Tuple[int, int]:
        return self.front_shape[1], self.end_shape[1]

    def forward(self, x, w, b):
        return F.linear(resample_tokens(x, self.end_shape[0]), w, b)

    def design(self, front, end):
        return token_rows(resample_tokens(front, self.end_shape[0])), token_rows(end)

    def describe(self) -> str:
        n, n_out = self.front_shape[0], self.end_shape[0]
        if n == n_out:
            how = "token to token"
        elif token_grid(n) is None or token_grid(n_out) is None:
            how = "linear along the tokens"
        else:
            how = f"{describe_grid(n)} -> {describe_grid(n_out)} tokens"
        return f"{super().describe()} ({how})"


class TokensToMap(StitchKind):
    name = "tokens_to_map"
    summary = ("token sequence into feature map: prefix tokens dropped, patch tokens on their grid resampled to "
               "H x W, then 1x1 map")

    @classmethod
    def misfit(cls, front_shape, end_shape):
        if len(front_shape) != 2 or len(end_shape) != 3:
            return "it maps a token sequence (N x D) into a feature map (C x H x W)"
        return _grid_misfit("front", front_shape[0])

    def features(self) -> Tuple[int, int]:
        return self.front_shape[1], self.end_shape[0]

    def forward(self, x, w, b):
        size = self.end_shape[1:]
        grid = patch_grid(x, *token_grid(self.front_shape[0]))
        return nearest_up(F.conv2d(average_down(grid, size), w[:, :, None, None], b), size)

    def design(self, front, end):
        grid = patch_grid(front, *token_grid(self.front_shape[0]))
        return pixel_rows(resample(grid, self.end_shape[1:])), pixel_rows(end)

    def describe(self) -> str:
        return f"{super().describe()} ({describe_grid(self.front_shape[0])} tokens, prefix dropped)"


class MapToTokens(StitchKind):
    name = "map_to_tokens"
    summary = ("feature map into token sequence: resampled to the patch grid, prefix tokens the global average "
               "pool, then one Linear layer on every token")

    @classmethod
    def misfit(cls, front_shape, end_shape):
        if len(front_shape) != 3 or len(end_shape) != 2:
            return "it maps a feature map (C x H x W) into a token sequence (N x D)"
        return _grid_misfit("end", end_shape[0])

    def features(self) -> Tuple[int, int]:
        return self.front_shape[0], self.end_shape[1]

    def forward(self, x, w, b):
        return F.linear(tokens_of_map(x, self.end_shape[0]), w, b)

    def design(self, front, end):
        return token_rows(tokens_of_map(front, self.end_shape[0])), token_rows(end)

    def describe(self) -> str:
        return f"{super().describe()} ({describe_grid(self.end_shape[0])} tokens, prefix the average pool)"


class TokensPool(StitchKind):
    name = "tokens_pool"
    summary = "token sequence into vector with --pool: mean over all tokens, then Linear layer"

    @classmethod
    def misfit(cls, front_shape, end_shape):
        if len(front_shape) != 2 or len(end_shape) != 1:
            return "it maps a token sequence (N x D) into a vector"
        return None

    @classmethod
    def chosen(cls, front_shape, end_shape, options: StitchOptions) -> bool:
        return options.pool and not options.flatten and cls.misfit(front_shape, end_shape) is None

    def features(self) -> Tuple[int, int]:
        return self.front_shape[1], self.end_shape[0]

    def forward(self, x, w, b):
        return F.linear(x.mean(dim=1), w, b)

    def design(self, front, end):
        return front.mean(dim=1), end
