"""Optimisers, the step learning-rate schedule of the reference, and linear warm-up then cosine decay."""
import math
from typing import Iterable, List

import torch

from src.errors import UserError

OPTIMIZERS = ("sgd", "adam")
# The reference multiplies the learning rate by 0.1 once training is a third and two thirds done.
SCHEDULE_FRACTIONS = (0.333, 0.666)
SCHEDULE_GAMMA = 0.1


def make_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9 (as the reference) or Adam."""
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def step_milestones(epochs: int) -> List[int]:
    """Epochs at whose start the learning rate is multiplied by 0.1.

    The first epoch ``i`` (0-based) with ``i / epochs >= 0.333`` and the first with ``i / epochs >= 0.666``,
    exactly as the reference's step schedule; e.g. 30 epochs -> [10, 20], 3 epochs -> [1, 2].
    """
    milestones = []
    for fraction in SCHEDULE_FRACTIONS:
        first = max(1, math.ceil(fraction * epochs - 1e-9))
        if first < epochs:
            milestones.append(first)
    return milestones


def step_schedule(optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.MultiStepLR:
    """The scheduler to step once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=step_milestones(epochs), gamma=SCHEDULE_GAMMA)


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based) of ``total_steps``.

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps (so step
    ``warmup_steps - 1`` runs at the full rate and no step at zero), then half a cosine from 1 down
    towards 0: ``(1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))) / 2``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                           warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The scheduler to step once per optimizer step (iteration): :func:`warmup_cosine_factor` times the base rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, total_steps, warmup_steps))
