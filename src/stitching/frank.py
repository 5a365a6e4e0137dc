"""The stitched ("Frankenstein") network: front network up to a layer, a stitch, end network after a layer."""
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from src.stitching.cut import EndPart, FrontPart
from src.stitching.affine import AffineStitch


def freeze(model: nn.Module) -> nn.Module:
    """No gradients, eval mode (BatchNorm uses its running statistics)."""
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


def activation_shape(part: nn.Module, input_shape, device="cpu") -> Tuple[int, ...]:
    """Output shape (batch excluded) of a front part for one input shape."""
    with torch.no_grad():
        return tuple(part(torch.zeros(2, *input_shape, device=device)).shape[1:])


def network_part(memo: Dict, kind, model: nn.Module, layer: str, fold_batchnorm: bool = False):
    """``kind(model, layer, fold_batchnorm)`` (a :class:`FrontPart` or :class:`EndPart`), made once per ``memo``
    (a stitch matrix keeps one per pair of loaded networks: the parts are stateless views of frozen networks, so
    its cells share them instead of tracing the same cut again)."""
    key = (kind.__name__, id(model), layer, fold_batchnorm)
    if key not in memo:
        memo[key] = kind(model, layer, fold_batchnorm)
    return memo[key]


class FrankensteinNet(nn.Module):
    """``end_after(end_layer)(x, stitch(front_upto(front_layer)(x)))``.

    Both networks are frozen and stay in ``eval()`` mode whatever ``train()`` is called with; only
    the stitch trains. ``fold_batchnorm`` folds BatchNorms into the preceding layers of both parts
    (see :mod:`src.stitching.cut`). ``end_target(x)`` gives the end network's own activation at ``end_layer``
    (what the stitch imitates), computed only when asked for (CKA regularisation, measurements).
    """

    def __init__(self, front_model: nn.Module, end_model: nn.Module, front_layer: str, end_layer: str,
                 stitch: AffineStitch, fold_batchnorm: bool = False, parts: Optional[Dict] = None):
        super().__init__()
        self.front_model = freeze(front_model)
        self.end_model = freeze(end_model)
        self.front_layer, self.end_layer = front_layer, end_layer
        self.fold_batchnorm = fold_batchnorm
        self._parts = {} if parts is None else parts
        self.front = network_part(self._parts, FrontPart, self.front_model, front_layer, fold_batchnorm)
        self.end = network_part(self._parts, EndPart, self.end_model, end_layer, fold_batchnorm)
        self.stitch = stitch
        self._end_front: Optional[FrontPart] = None

    def train(self, mode: bool = True):
        super().train(mode)
        self.front_model.eval()
        self.end_model.eval()
        return self

    @property
    def end_front(self) -> FrontPart:
        if self._end_front is None:
            self._end_front = network_part(self._parts, FrontPart, self.end_model, self.end_layer, self.fold_batchnorm)
        return self._end_front

    def front_activation(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.front(x)

    def end_target(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.end_front(x)

    def forward_from(self, x: Optional[torch.Tensor], front_activation: torch.Tensor) -> torch.Tensor:
        """The stitched output given the front activation (``x`` only needed if the end part uses it)."""
        return self.end(x, self.stitch(front_activation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, self.front_activation(x))
