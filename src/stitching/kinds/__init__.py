"""The registry of stitch kinds: which affine map joins two activation shapes.

Each kind is one class (see :mod:`src.stitching.kinds.base` for what it holds); a new kind is one
class in one file plus one line in ``KINDS``. The order of ``KINDS`` is the order in which
:func:`choose_kind` tries them; the first whose ``chosen`` rule holds wins.

===================  ==========================================================================
kind                 when (front -> end shape)
===================  ==========================================================================
flatten              ``--flatten`` (any shapes); C x H x W -> D and N x D -> D' (without ``--pool``);
                     D -> C x H x W and D -> N x D'
pool_linear          C x H x W -> D with ``--pool``
conv1x1              C x H x W -> C' x H x W
strided_conv         C x kH x kW -> C' x H x W (integer k >= 2)
upsample_conv1x1     C x H x W -> C' x kH x kW (integer k >= 2)
resample_conv1x1     C x H x W -> C' x H' x W' otherwise
linear               D -> D'
tokens               N x D -> N' x D' (tokens; module :mod:`~src.stitching.kinds.tokens`)
tokens_to_map        N x D -> C x H x W (N = p + g x g: a patch grid and p <= 8 prefix tokens)
map_to_tokens        C x H x W -> N x D (N = p + g x g)
tokens_pool          N x D -> D' with ``--pool``
===================  ==========================================================================
"""
from typing import Dict, Optional, Sequence, Type

from src.errors import UserError
from src.stitching.kinds.base import StitchKind, StitchOptions, fmt
from src.stitching.kinds.maps import Conv1x1, ResampleConv1x1, UpsampleConv1x1
from src.stitching.kinds.strided import StridedConv
from src.stitching.kinds.tokens import MapToTokens, Tokens, TokensPool, TokensToMap
from src.stitching.kinds.vectors import Flatten, Linear, PoolLinear

KINDS: Dict[str, Type[StitchKind]] = {k.name: k for k in (
    Flatten,
    PoolLinear,
    Conv1x1,
    StridedConv,
    UpsampleConv1x1,
    ResampleConv1x1,
    Linear,
    Tokens,
    TokensToMap,
    MapToTokens,
    TokensPool,
)}


def get_kind(name: str) -> Type[StitchKind]:
    if name not in KINDS:
        raise UserError(f"unknown stitch kind {name!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[name]


def choose_kind(front_shape: Sequence[int], end_shape: Sequence[int], flatten: bool = False,
                pool: bool = False) -> Type[StitchKind]:
    """The kind for two activation shapes (batch excluded) and the stitch options; a UserError if none applies."""
    if flatten and pool:
        raise UserError("--flatten and --pool exclude each other: --flatten maps the whole flattened tensors, "
                        "--pool averages a feature map over H x W first; pass one")
    front_shape, end_shape = tuple(front_shape), tuple(end_shape)
    options = StitchOptions(flatten=flatten, pool=pool)
    for kind in KINDS.values():
        if kind.chosen(front_shape, end_shape, options):
            return kind
    raise UserError(f"no stitch kind maps a {len(front_shape)}-d activation ({fmt(front_shape)}) to a "
                    f"{len(end_shape)}-d one ({fmt(end_shape)}); use --flatten for a map between the flattened tensors")


def make_kind(front_shape: Sequence[int], end_shape: Sequence[int], flatten: bool = False, pool: bool = False,
              kind: Optional[str] = None) -> StitchKind:
    """The kind instance for two shapes: the named ``kind`` (e.g. rebuilt from a pickle), else the chosen one."""
    cls = get_kind(kind) if kind is not None else choose_kind(front_shape, end_shape, flatten, pool)
    return cls(front_shape, end_shape)


__all__ = ["KINDS", "StitchKind", "StitchOptions", "choose_kind", "get_kind", "make_kind"]
