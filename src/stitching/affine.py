"""The stitch layer: an affine map from the front network's representation to the end network's.

One module, :class:`AffineStitch`, holds the parameters (weight ``W``, bias ``b``, optional low-rank
factors and mask); its *kind* (:mod:`src.stitching.kinds`) decides how ``W`` is applied to the
activations (1x1 conv, strided conv, resample + 1x1 conv, linear, flatten, pool + linear) and how
the least-squares rows are laid out. :func:`make_stitch` picks the kind from the two activation
shapes and the options.

The weight ``W`` is a (out_features x in_features) matrix, either a full parameter or, with
``rank=R``, the product of a (in x R) factor ``w1`` and a (R x out) factor ``w2`` (``W = (w1 @ w2)^T``).
An optional 0/1 ``mask`` of W's shape multiplies it elementwise (masked entries stay zero and get no gradient).
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from src.errors import UserError
from src.stitching.kinds import StitchKind, make_kind


class AffineStitch(nn.Module):
    """``y = W x + b`` laid out by the stitch's ``kind``: a :class:`~src.stitching.kinds.StitchKind` for the two
    shapes, or the name of one (:data:`src.stitching.kinds.KINDS`, e.g. as recorded in a result)."""

    def __init__(self, front_shape: Sequence[int], end_shape: Sequence[int], kind: Union[str, StitchKind],
                 rank: Optional[int] = None):
        super().__init__()
        self.kind = kind if isinstance(kind, StitchKind) else make_kind(front_shape, end_shape, kind=kind)
        if self.kind.front_shape != tuple(front_shape) or self.kind.end_shape != tuple(end_shape):
            raise ValueError(f"the kind {self.kind.describe()} is for other shapes than {tuple(front_shape)} -> {tuple(end_shape)}")
        self.front_shape, self.end_shape = self.kind.front_shape, self.kind.end_shape
        self.in_features, self.out_features = self.kind.in_features, self.kind.out_features
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
        return self.kind.forward(x, self.matrix(), self.bias)

    def design(self, front: torch.Tensor, end: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The least-squares rows ``(samples x in_features, samples x out_features)`` of a batch of front and
        end activations: ``forward(front)`` is ``rows_x @ W^T + b`` in the layout of ``end``."""
        return self.kind.design(front, end)

    def fresh(self) -> "AffineStitch":
        """A new stitch of the same kind, shapes and rank (default init, no mask), on the same device."""
        return AffineStitch(self.front_shape, self.end_shape, self.kind, self.rank).to(self.bias.device)

    # -- export ------------------------------------------------------------------------------
    def param_dict(self) -> Dict[str, np.ndarray]:
        """A snapshot of the weights as numpy; ``w`` in the kind's layout: (out, in, 1, 1) for the 1x1 kinds (the
        reference's), (out, C, k, k) for strided_conv, (out, in) otherwise."""
        def numpy(t: torch.Tensor) -> np.ndarray:  # a copy: CPU tensors share memory with .numpy()
            return t.detach().cpu().numpy().copy()

        w = numpy(self.matrix())
        out = {"w": w.reshape(self.kind.weight_shape), "b": numpy(self.bias)}
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
        return f"{self.kind.describe()}{rank}{masked}"


def make_stitch(front_shape: Sequence[int], end_shape: Sequence[int], flatten: bool = False,
                rank: Optional[int] = None, pool: bool = False, kind: Optional[str] = None) -> AffineStitch:
    """The stitch layer for two activation shapes (batch dimension excluded): the named ``kind`` (as recorded in a
    result), else the kind :func:`src.stitching.kinds.choose_kind` picks for the shapes and options."""
    chosen = make_kind(front_shape, end_shape, flatten=flatten, pool=pool, kind=kind)
    return AffineStitch(chosen.front_shape, chosen.end_shape, chosen, rank)
