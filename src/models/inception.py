"""InceptionV1 (GoogLeNet) with the channel plan of the "inception5h" graph (the Lucid / reference model).

Stem: ``conv2d0`` (7x7/2, 64) -> ``maxpool0`` (3x3/2) -> ``lrn0`` -> ``conv2d1`` (1x1, 64) ->
``conv2d2`` (3x3, 192) -> ``lrn1`` -> ``maxpool1``; then Inception blocks ``mixed3a``, ``mixed3b``,
``maxpool4``, ``mixed4a`` ... ``mixed4e``, ``maxpool10``, ``mixed5a``, ``mixed5b`` (pool names as in
that graph), a global average pool and ``fc``. All convolutions and pools are padded, so the
spatial size goes 224 -> 112 -> 56 -> 28 -> 14 -> 7 and 32 -> 16 -> 8 -> 4 -> 2 -> 1.
"""
from torch import nn

from src.models.common import Concat, GlobalAvgPool
from src.models.registry import register_model

#: Output channels of each block's branches: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection.
MIXED = {
    "mixed3a": (64, 96, 128, 16, 32, 32),
    "mixed3b": (128, 128, 192, 32, 96, 64),
    "mixed4a": (192, 96, 204, 16, 48, 64),
    "mixed4b": (160, 112, 224, 24, 64, 64),
    "mixed4c": (128, 128, 256, 24, 64, 64),
    "mixed4d": (112, 144, 288, 32, 64, 64),
    "mixed4e": (256, 160, 320, 32, 128, 128),
    "mixed5a": (256, 160, 320, 48, 128, 128),
    "mixed5b": (384, 192, 384, 48, 128, 128),
}
#: The stride-2 max-pools between the block groups, by the block they follow.
POOL_AFTER = {"mixed3b": "maxpool4", "mixed4e": "maxpool10"}


class ConvReLU(nn.Module):
    """``conv`` -> (``bn``) -> ``relu``, with "same" padding; the container's output is the ReLU's."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 batch_norm: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else None
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool -> 1x1) joined by ``concat``."""

    def __init__(self, in_channels: int, widths, batch_norm: bool = False):
        super().__init__()
        n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, n_pool_proj = widths
        self.b1x1 = ConvReLU(in_channels, n1x1, 1, batch_norm=batch_norm)
        self.b3x3_reduce = ConvReLU(in_channels, n3x3_reduce, 1, batch_norm=batch_norm)
        self.b3x3 = ConvReLU(n3x3_reduce, n3x3, 3, batch_norm=batch_norm)
        self.b5x5_reduce = ConvReLU(in_channels, n5x5_reduce, 1, batch_norm=batch_norm)
        self.b5x5 = ConvReLU(n5x5_reduce, n5x5, 5, batch_norm=batch_norm)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.pool_proj = ConvReLU(in_channels, n_pool_proj, 1, batch_norm=batch_norm)
        self.concat = Concat()
        self.out_channels = n1x1 + n3x3 + n5x5 + n_pool_proj

    def forward(self, x):
        return self.concat(self.b1x1(x),
                           self.b3x3(self.b3x3_reduce(x)),
                           self.b5x5(self.b5x5_reduce(x)),
                           self.pool_proj(self.pool(x)))


def _downsample() -> nn.MaxPool2d:
    """A 3x3 stride-2 max-pool that halves the spatial size (rounding up)."""
    return nn.MaxPool2d(3, stride=2, padding=1)


def _lrn() -> nn.LocalResponseNorm:
    """The local response normalisation of the inception5h graph."""
    return nn.LocalResponseNorm(size=9, alpha=9.99999974738e-05, beta=0.5, k=1.0)


@register_model("inceptionv1")
class InceptionV1(nn.Module):
    """GoogLeNet without auxiliary heads or dropout; ``batch_norm=True`` adds BatchNorm after every conv."""

    def __init__(self, n_classes: int = 10, n_channels: int = 3, batch_norm: bool = False):
        super().__init__()
        self.conv2d0 = ConvReLU(n_channels, 64, 7, stride=2, batch_norm=batch_norm)
        self.maxpool0 = _downsample()
        self.lrn0 = _lrn()
        self.conv2d1 = ConvReLU(64, 64, 1, batch_norm=batch_norm)
        self.conv2d2 = ConvReLU(64, 192, 3, batch_norm=batch_norm)
        self.lrn1 = _lrn()
        self.maxpool1 = _downsample()
        in_channels = 192
        for name, widths in MIXED.items():
            block = InceptionBlock(in_channels, widths, batch_norm=batch_norm)
            self.add_module(name, block)
            in_channels = block.out_channels
            if name in POOL_AFTER:
                self.add_module(POOL_AFTER[name], _downsample())
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(in_channels, n_classes)

    def forward(self, x):
        x = self.conv2d0(x)
        x = self.lrn0(self.maxpool0(x))
        x = self.conv2d1(x)
        x = self.conv2d2(x)
        x = self.maxpool1(self.lrn1(x))
        x = self.mixed3b(self.mixed3a(x))
        x = self.maxpool4(x)
        x = self.mixed4e(self.mixed4d(self.mixed4c(self.mixed4b(self.mixed4a(x)))))
        x = self.maxpool10(x)
        x = self.mixed5b(self.mixed5a(x))
        x = self.avgpool(x)
        return self.fc(x)
