"""The ``blocks`` layer preset: the stages of a network, found from its module structure.

For a residual network (modules with an :class:`~src.models.common.Add` child, i.e. residual
blocks): the stem output (the last layer that runs before the first block) and every block's
output, numbered as in Hernandez et al. (2022) by the number of blocks before it (stem 0, first
block 1, ...). For a network without residual blocks: one layer per convolution stage, the
BatchNorm right after a convolution when there is one, else the convolution (Tiny10: ``bn1..bn8``;
LeNet: ``conv1, conv2``); without convolutions, every linear layer but the classifier. The order is
the order a forward pass runs them.
"""
from typing import List

import torch
from torch import nn

from src.errors import UserError
from src.features.hooks import forward_order, unwrap_model
from src.models.common import Add


def residual_blocks(model: nn.Module) -> List[str]:
    """Names of the modules that hold a residual sum (an ``Add`` child), outermost only."""
    found = [name for name, module in model.named_modules()
             if name and any(isinstance(child, Add) for child in module.children())]
    return [n for n in found if not any(n.startswith(other + ".") for other in found)]


def _inside(name: str, block: str) -> bool:
    return name == block or name.startswith(block + ".")


def block_outputs(model: nn.Module, example: torch.Tensor) -> List[str]:
    """The ``blocks`` preset of ``model`` (see the module docstring), in forward order."""
    model = unwrap_model(model)
    order = forward_order(model, example[:2])
    modules = dict(model.named_modules())
    blocks = residual_blocks(model)
    if blocks:
        first_leaf = {b: next(i for i, n in enumerate(order) if _inside(n, b)) for b in blocks}
        blocks = sorted(blocks, key=first_leaf.get)
        before = [n for n in order[:first_leaf[blocks[0]]] if not any(_inside(n, b) for b in blocks)]
        return before[-1:] + blocks
    stages = []
    for i, name in enumerate(order):
        if isinstance(modules[name], nn.Conv2d):
            follows = order[i + 1] if i + 1 < len(order) else None
            stages.append(follows if follows and isinstance(modules[follows], nn.modules.batchnorm._BatchNorm) else name)
    if not stages:
        stages = [n for n in order if isinstance(modules[n], nn.Linear)][:-1]
    if not stages:
        raise UserError(f"{type(model).__name__} has no residual blocks, convolutions or hidden linear layers "
                        f"for the 'blocks' preset; name the layers instead")
    return stages
