"""What every stitch kind is: an affine map ``W x + b`` whose rows and columns a kind lays out.

A kind is one class (one record) that knows, for a pair of activation shapes (batch excluded):

- ``misfit(front_shape, end_shape)``: why it cannot map them (None when it can);
- ``chosen(front_shape, end_shape, options)``: whether :func:`~src.stitching.kinds.choose_kind`
  picks it for these shapes and stitch options (registry order breaks ties);
- ``features()``: ``(in_features, out_features)`` of its (out x in) weight matrix W;
- ``forward(x, w, b)``: the stitch output for a batch of front activations;
- ``design(front, end)``: the rows of the least-squares problem, ``(samples x in_features,
  samples x out_features)`` such that ``forward`` applied to ``front`` equals ``rows_x @ W^T + b``
  laid out like ``end`` (``-i ps_inv`` fits exactly the map the kind applies);
- ``weight_shape``: the shape of ``w`` in the result pickle (e.g. a conv weight ``(out, C, k, k)``);
- ``channel_map``: whether W maps features to features one to one (so the identity, a
  permutation and the masks are defined on it); False where W's inputs are patch entries.

A kind is rebuilt from the pickle by its name and the two recorded shapes (``get_kind(name)(front_shape,
end_shape)``): nothing else is needed.
"""
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Tuple

import torch

from src.errors import UserError

Shape = Tuple[int, ...]


def fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def pixel_rows(t: torch.Tensor) -> torch.Tensor:
    """``N x C x H x W`` -> ``(N*H*W) x C``: every pixel of every sample is one row (the 1x1-conv view)."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


@dataclass(frozen=True)
class StitchOptions:
    """The options that steer the choice of kind: ``flatten`` (the whole flattened tensors, any shapes)
    and ``pool`` (a feature map or a token sequence into a vector by averaging over H x W or over the
    tokens instead of flattening)."""

    flatten: bool = False
    pool: bool = False


class StitchKind:
    """Base of the stitch kinds (see the module docstring); subclasses set the class attributes and methods."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for the README table and error messages
    channel_map: ClassVar[bool] = True

    def __init__(self, front_shape: Sequence[int], end_shape: Sequence[int]):
        self.front_shape, self.end_shape = tuple(int(s) for s in front_shape), tuple(int(s) for s in end_shape)
        why = self.misfit(self.front_shape, self.end_shape)
        if why:
            raise UserError(f"a {self.name} stitch cannot map {fmt(self.front_shape)} to {fmt(self.end_shape)}: {why}")
        self.in_features, self.out_features = self.features()

    # -- the record ------------------------------------------------------------------------------
    @classmethod
    def misfit(cls, front_shape: Shape, end_shape: Shape) -> Optional[str]:
        raise NotImplementedError

    @classmethod
    def chosen(cls, front_shape: Shape, end_shape: Shape, options: StitchOptions) -> bool:
        """Default rule: the kind fits and ``--flatten`` was not asked for."""
        return not options.flatten and cls.misfit(front_shape, end_shape) is None

    def features(self) -> Tuple[int, int]:
        """(in_features, out_features) of W; by default channel (or feature) to channel."""
        return self.front_shape[0], self.end_shape[0]

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def design(self, front: torch.Tensor, end: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return (self.out_features, self.in_features)

    def describe(self) -> str:
        """E.g. ``conv1x1: 32x13x13 -> 32x13x13``."""
        return f"{self.name}: {fmt(self.front_shape)} -> {fmt(self.end_shape)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"
