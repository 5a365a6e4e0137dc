"""The stitch layers: an affine map from the front network's representation to the end network's.

One class, :class:`AffineStitch`, covers the family; :func:`make_stitch` picks its mode from the
two activation shapes (the one place to extend when new kinds of stitches arrive):

- ``conv1x1``  feature maps (C, H, W) -> (C', H, W): a 1x1 convolution with bias (channel to channel);
- ``linear``   vectors (D,) -> (D',): a Linear layer;
- ``flatten``  any shapes, with ``flatten=True``: a Linear map of the whole flattened tensor (pixel to pixel).

The weight ``W`` is a (out_features x in_features) matrix, either a full parameter or, with
``rank=R``, the product of a (in x R) factor ``w1`` and a (R x out) factor ``w2`` (``W = (w1 @ w2)^T``).
An optional 0/1 ``mask`` of W's shape multiplies it elementwise (masked entries stay zero and get no gradient).
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from src.errors import UserError

MODES = ("conv1x1", "linear", "flatten")


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def stitch_mode(front_shape: Sequence[int], end_shape: Sequence[int], flatten: bool = False) -> str:
    """The stitch kind for two activation shapes (without batch dimension); unstitchable shapes are an error."""
    front_shape, end_shape = tuple(front_shape), tuple(end_shape)
    if flatten:
        return "flatten"
    if len(front_shape) == 3 and len(end_shape) == 3:
        if front_shape[1:] != end_shape[1:]:
            raise UserError(f"cannot stitch feature maps of different spatial size: front {_fmt(front_shape)}, "
                            f"end {_fmt(end_shape)}; a 1x1 stitch needs equal HxW (use --flatten for a pixel-to-pixel map)")
        return "conv1x1"
    if len(front_shape) == 1 and len(end_shape) == 1:
        return "linear"
    raise UserError(f"cannot stitch a {len(front_shape)}-d activation ({_fmt(front_shape)}) to a {len(end_shape)}-d one "
                    f"({_fmt(end_shape)}); use --flatten for a map between the flattened tensors")


def feature_dims(front_shape: Sequence[int], end_shape: Sequence[int], mode: str) -> Tuple[int, int]:
    """(in_features, out_features) of W for a mode."""
    if mode == "flatten":
        return int(np.prod(front_shape)), int(np.prod(end_shape))
    return int(front_shape[0]), int(end_shape[0])


class AffineStitch(nn.Module):
    """``y = W x + b`` applied per pixel (conv1x1), per sample (linear) or to the flattened sample (flatten)."""

    def __init__(self, front_shape: Sequence[int], end_shape: Sequence[int], mode: str, rank: Optional[int] = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.front_shape, self.end_shape, self.mode = tuple(front_shape), tuple(end_shape), mode
        self.in_features, self.out_features = feature_dims(front_shape, end_shape, mode)
        max_rank = min(self.in_features, self.out_features)
        if rank is not None and not 1 <= rank <= max_rank:
            raise UserError(f"--low-rank must be between 1 and {max_rank} for a {self.in_features} -> {self.out_features} stitch, not {rank}")
        self.rank = rank
        if rank is None:
            self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        else:
            self.w1 = nn.Parameter(torch.empty(self.in_features, rank))
            self.w2 = nn.Parameter(torch.empty(rank, self.out_features))
        self.bias = nn.Parameter(torch.zeros(self.out_features))
        self.register_buffer("mask", None)
        self.reset_parameters()

    # -- parameters ------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """PyTorch's default Conv/Linear init (Kaiming-uniform); orthogonal factors for the low-rank form."""
        bound = 1 / math.sqrt(self.in_features)
        if self.rank is None:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        else:
            nn.init.orthogonal_(self.w1)
            nn.init.orthogonal_(self.w2)
        nn.init.uniform_(self.bias, -bound, bound)

    def matrix(self) -> torch.Tensor:
        """The effective (out x in) weight, mask applied."""
        w = self.weight if self.rank is None else (self.w1 @ self.w2).t()
        return w if self.mask is None else w * self.mask

    @torch.no_grad()
    def set_affine(self, w, b) -> None:
        """Load a full (out x in) weight and bias; a low-rank stitch takes the best rank-R approximation (SVD)."""
        w = torch.as_tensor(np.asarray(w), dtype=torch.float64).reshape(self.out_features, self.in_features)
        b = torch.as_tensor(np.asarray(b), dtype=torch.float64).reshape(self.out_features)
        if self.rank is None:
            self.weight.copy_(w)
        else:
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            root = s[: self.rank].sqrt()
            self.w1.copy_(vh[: self.rank].t() * root)  # in x R
            self.w2.copy_(root[:, None] * u[:, : self.rank].t())  # R x out
        self.bias.copy_(b)

    @torch.no_grad()
    def set_mask(self, mask) -> None:
        mask = torch.as_tensor(np.asarray(mask), dtype=torch.float32).reshape(self.out_features, self.in_features)
        self.mask = mask.to(self.bias.device)

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.matrix()
        if self.mode == "conv1x1":
            return F.conv2d(x, w[:, :, None, None], self.bias)
        if self.mode == "linear":
            return F.linear(x, w, self.bias)
        return F.linear(x.flatten(1), w, self.bias).view(x.shape[0], *self.end_shape)

    # -- export ------------------------------------------------------------------------------
    def param_dict(self) -> Dict[str, np.ndarray]:
        """A snapshot of the weights as numpy, in the reference's layout: ``w`` is (out, in, 1, 1) for conv1x1, (out, in) otherwise."""
        def numpy(t: torch.Tensor) -> np.ndarray:  # a copy: CPU tensors share memory with .numpy()
            return t.detach().cpu().numpy().copy()

        w = numpy(self.matrix())
        out = {"w": w[:, :, None, None] if self.mode == "conv1x1" else w, "b": numpy(self.bias)}
        if self.rank is not None:
            out["w1"], out["w2"] = numpy(self.w1), numpy(self.w2)
        return out

    @torch.no_grad()
    def load_param_dict(self, params: Dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`param_dict` (low-rank factors are loaded exactly when present)."""
        if self.rank is not None and "w1" in params:
            self.w1.copy_(torch.as_tensor(params["w1"]))
            self.w2.copy_(torch.as_tensor(params["w2"]))
            self.bias.copy_(torch.as_tensor(params["b"]))
        else:
            self.set_affine(params["w"], params["b"])

    def extra_repr(self) -> str:
        rank = f", rank={self.rank}" if self.rank is not None else ""
        masked = ", masked" if self.mask is not None else ""
        return f"{self.mode}: {_fmt(self.front_shape)} -> {_fmt(self.end_shape)}{rank}{masked}"


def make_stitch(front_shape: Sequence[int], end_shape: Sequence[int], flatten: bool = False,
                rank: Optional[int] = None) -> AffineStitch:
    """The stitch layer for two activation shapes (batch dimension excluded)."""
    return AffineStitch(front_shape, end_shape, stitch_mode(front_shape, end_shape, flatten), rank)
