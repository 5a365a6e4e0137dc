"""Loss, accuracy and predictions of a classifier over a loader, under ``torch.no_grad()``."""
from dataclasses import dataclass
from typing import Iterable, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def task_loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for class indices; binary cross-entropy on logits for multi-label targets."""
    if multilabel:
        loss = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").mean(dim=1)
        return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss
    return F.cross_entropy(logits, targets, reduction=reduction)


def predictions_of(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return (logits > 0).long() if multilabel else logits.argmax(dim=1)


@dataclass
class EvalResult:
    """Per-sample outcome of an evaluation; ``loss`` and ``acc`` are means over samples."""

    loss: float
    acc: float
    predictions: np.ndarray  # (N,) class indices, or (N, A) 0/1 for multi-label
    hits: np.ndarray  # (N,) bool, or (N, A) for multi-label

    @property
    def n(self) -> int:
        return int(self.hits.shape[0])


def predict(model: nn.Module, loader: Iterable, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """All logits and targets of ``loader`` (on the CPU), the model in eval mode, gradients off."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, targets = [], []
    try:
        with torch.no_grad():
            for inputs, labels in loader:
                logits.append(model(inputs.to(device, non_blocking=True)).float().cpu())
                targets.append(labels.cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


def evaluate(model: nn.Module, loader: Iterable, multilabel: bool = False, device=None) -> EvalResult:
    logits, targets = predict(model, loader, device)
    return result_from_logits(logits, targets, multilabel)


def result_from_logits(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> EvalResult:
    loss = task_loss(logits, targets, multilabel).item()
    preds = predictions_of(logits, multilabel)
    hits = preds == targets.long()
    return EvalResult(loss=float(loss), acc=float(hits.float().mean().item()), predictions=preds.numpy(), hits=hits.numpy())
