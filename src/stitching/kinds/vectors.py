"""Stitches through a Linear layer: vectors, flattened tensors, pooled feature maps.

- ``linear``: vector (D,) into vector (D',).
- ``flatten``: the whole flattened front tensor into the whole flattened end tensor, reshaped
  to the end network's shape. Chosen for any shapes with ``--flatten`` (pixel to pixel), and without it
  for a feature map or a token sequence into a vector (flatten + linear; ``--pool`` averages instead:
  ``pool_linear``, ``tokens_pool``) and a vector into a feature map or a token sequence (linear + reshape).
- ``pool_linear`` (``--pool``): a feature map into a vector by global average pooling over H x W,
  then a Linear layer (channel to feature).
"""
from typing import Tuple

import numpy as np

from src.stitching.kinds.base import StitchKind, StitchOptions


class Linear(StitchKind):
    name = "linear"
    summary = "vector into vector: Linear layer"

    @classmethod
    def misfit(cls, front_shape, end_shape):
        return None if len(front_shape) == 1 and len(end_shape) == 1 else "it maps a vector into a vector"

    def forward(self, x, w, b):
        return x @ w.t() + b

    def design(self, front, end):
        return front, end


class Flatten(StitchKind):
    name = "flatten"
    summary = ("whole flattened tensors (--flatten, any shapes); also feature map or tokens into vector "
               "(flatten + linear) and vector into feature map or tokens (linear + reshape)")

    @classmethod
    def misfit(cls, front_shape, end_shape):
        return None

    @classmethod
    def chosen(cls, front_shape, end_shape, options: StitchOptions) -> bool:
        ranks = (len(front_shape), len(end_shape))
        return options.flatten or ranks in ((1, 3), (1, 2)) or (ranks in ((3, 1), (2, 1)) and not options.pool)

    def features(self) -> Tuple[int, int]:
        return int(np.prod(self.front_shape)), int(np.prod(self.end_shape))

    def forward(self, x, w, b):
        return (x.flatten(1) @ w.t() + b).view(x.shape[0], *self.end_shape)

    def design(self, front, end):
        return front.flatten(1), end.flatten(1)


class PoolLinear(StitchKind):
    name = "pool_linear"
    summary = "feature map into vector with --pool: global average pooling, then Linear layer"

    @classmethod
    def misfit(cls, front_shape, end_shape):
        return None if len(front_shape) == 3 and len(end_shape) == 1 else "it maps a feature map into a vector"

    @classmethod
    def chosen(cls, front_shape, end_shape, options: StitchOptions) -> bool:
        return options.pool and not options.flatten and cls.misfit(front_shape, end_shape) is None

    def forward(self, x, w, b):
        return x.mean(dim=(2, 3)) @ w.t() + b

    def design(self, front, end):
        return front.mean(dim=(2, 3)), end
