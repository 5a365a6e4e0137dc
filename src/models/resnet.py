"""CIFAR ResNets built from BasicBlocks: ResNet-20 of any width and the small ResNets of Hernandez et al.

All share one stem (3x3 conv, stride 1, no max-pool), one :class:`BasicBlock` and one builder:

- ``resnet20_w{k}``: 3 stages of 3 blocks, widths 16k, 32k, 64k (the reference's ResNet20; its
  state_dict keys are kept, so the reference checkpoints load unchanged).
- ``resnet_{abcd}[_w{k}]``: 4 stages of a, b, c, d blocks (each 1 or 2), widths k, 2k, 4k, 8k with
  stem width k = 64 unless given (``resnet_1111`` is ResNet-10, ``resnet_2222`` ResNet-18, both of
  width 64; ``resnet_1111_w16`` is ResNet-10 at a quarter of the width), as in "Model Stitching:
  Looking For Functional Similarity Between Representations" (Hernandez et al.).
- ``resnet34``: the same with 3, 4, 6, 3 blocks.

Unlike the reference, every ReLU is its own non-in-place module and the residual sum is an
:class:`~src.models.common.Add` module, so every step of a block is a layer one can stitch at.
"""
from typing import Sequence

from torch import nn

from src.models.common import Add
from src.models.registry import register_model


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A padded 3x3 convolution without bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """``relu2(add(bn2(conv2(relu1(bn1(conv1(x))))), shortcut(x)))``.

    The shortcut is the identity, or ``downsample`` (1x1 conv + BatchNorm) where the stride or
    the width changes.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(self.add(out, shortcut))


class ResNet(nn.Module):
    """Stem ``conv1``/``bn1``/``relu1``, stages ``layer1`` ... ``layerN``, ``avgpool``, ``flatten``, ``fc``.

    Stage ``i`` has ``blocks[i]`` BasicBlocks of width ``widths[i]``; every stage after the first
    starts with stride 2. Convolutions get Kaiming-normal (fan-out) weights, BatchNorms weight 1 and bias 0.
    """

    def __init__(self, widths: Sequence[int], blocks: Sequence[int], n_classes: int = 10, n_channels: int = 3):
        super().__init__()
        self.conv1 = conv3x3(n_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu1 = nn.ReLU()
        in_channels = widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(in_channels, width, stride)]
            stage += [BasicBlock(width, width) for _ in range(n_blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            in_channels = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, n_classes)
        self.n_stages = len(widths)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stages(self):
        """``layer1`` ... ``layerN`` in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.n_stages)]

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        for stage in self.stages():
            x = stage(x)
        x = self.flatten(self.avgpool(x))
        return self.fc(x)


@register_model("resnet20_w{k}", display="ResNet20_w{k}", aliases={"resnet20": "resnet20_w1"},
                note="k = width multiplier 1, 2, ...; resnet20 = resnet20_w1")
def resnet20(n_classes: int = 10, n_channels: int = 3, k: str = "1") -> ResNet:
    """The CIFAR ResNet-20 with ``k`` times the usual widths 16, 32, 64."""
    width = int(k)
    return ResNet((16 * width, 32 * width, 64 * width), (3, 3, 3), n_classes, n_channels)


@register_model("resnet_{abcd}[_w{k}]", display="ResNet_{abcd}[_w{k}]", defaults={"k": "64"},
                note="a, b, c, d = blocks per stage, each 1 or 2; k = stem width, default 64", abcd="[12]{4}")
def resnet_abcd(n_classes: int = 10, n_channels: int = 3, abcd: str = "2222", k: str = "64") -> ResNet:
    """A four-stage CIFAR ResNet with ``abcd`` giving the blocks per stage ("2222" is ResNet-18) and widths k, 2k, 4k, 8k."""
    width = int(k)
    return ResNet((width, 2 * width, 4 * width, 8 * width), tuple(int(digit) for digit in abcd), n_classes, n_channels)


@register_model("resnet34", display="ResNet34")
def resnet34(n_classes: int = 10, n_channels: int = 3) -> ResNet:
    """The four-stage CIFAR ResNet-34 (3, 4, 6, 3 blocks)."""
    return ResNet((64, 128, 256, 512), (3, 4, 6, 3), n_classes, n_channels)
