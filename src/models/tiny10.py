"""Tiny10, the small all-convolutional CIFAR network of the Dr. Frankenstein paper, with and without BatchNorm.

Eight 3x3 valid convolutions (the last one 1x1) with 16, 16, 32, 32, 32, 64, 64, 64 channels and
stride 2 at conv3 and conv6; a 32x32 input shrinks to 30, 28, 13, 11, 9, 4, 2, 2. Then a global
mean pool and a linear classifier. The layer names (``conv1``, ``bn1``, ``relu1``, ..., ``fc``) and
so the state_dict keys are those of the reference implementation, whose checkpoints load unchanged.
"""
from collections import OrderedDict

from torch import nn

from src.models.common import GlobalAvgPool
from src.models.registry import register_model

#: (output channels, kernel size, stride) of conv1 ... conv8.
CONVS = ((16, 3, 1), (16, 3, 1), (32, 3, 2), (32, 3, 1), (32, 3, 1), (64, 3, 2), (64, 3, 1), (64, 1, 1))


@register_model("tiny10")
class Tiny10(nn.Sequential):
    """conv{i} -> bn{i} -> relu{i} for i = 1..8, then ``pool`` (global mean) and ``fc``.

    A ``Sequential`` of named layers: the forward pass runs them in the order listed here.
    ``batch_norm=False`` leaves out the ``bn{i}`` layers (the NbnTiny10 variant).
    """

    def __init__(self, n_classes: int = 10, n_channels: int = 3, batch_norm: bool = True):
        layers = []
        in_channels = n_channels
        for i, (out_channels, kernel, stride) in enumerate(CONVS, start=1):
            layers.append((f"conv{i}", nn.Conv2d(in_channels, out_channels, kernel, stride=stride)))
            if batch_norm:
                layers.append((f"bn{i}", nn.BatchNorm2d(out_channels)))
            layers.append((f"relu{i}", nn.ReLU()))
            in_channels = out_channels
        layers.append(("pool", GlobalAvgPool()))
        layers.append(("fc", nn.Linear(in_channels, n_classes)))
        super().__init__(OrderedDict(layers))


@register_model("nbn_tiny10", display="NbnTiny10")
def nbn_tiny10(n_classes: int = 10, n_channels: int = 3) -> Tiny10:
    """Tiny10 without BatchNorm: conv{i} -> relu{i}, pool, fc."""
    return Tiny10(n_classes, n_channels, batch_norm=False)
