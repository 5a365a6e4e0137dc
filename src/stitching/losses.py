"""Training targets and losses of the stitch.

``--target-type``:
- ``hard``           the true labels;
- ``soft_1``         the front network's output (soft labels at ``--temperature``);
- ``soft_2``         the end network's output;
- ``soft_12``        both, the two losses averaged;
- ``soft_1_plus_2``  the mean of the two networks' logits.

Regularisers (as the reference): ``--l1 L`` adds ``L * mean(|W|)`` of the stitch weight;
``--cka-reg C`` adds ``C * CKA(end network's activation at end_layer, stitch output)`` computed on
each batch (linear CKA, differentiable). A positive C therefore *penalises* similarity: the stitch
is pushed to solve the task with a representation that CKA finds dissimilar from the end network's
(the reference's experiment); a negative C rewards similarity.
"""
from typing import List

import torch
from torch.nn import functional as F

from src.errors import UserError

TARGET_TYPES = ("hard", "soft_1", "soft_2", "soft_12", "soft_1_plus_2")


def teachers_needed(target_type: str) -> List[str]:
    """Which networks' outputs a target type needs: a sublist of ['front', 'end']."""
    if target_type not in TARGET_TYPES:
        raise UserError(f"unknown target type {target_type!r}; choose one of {', '.join(TARGET_TYPES)}")
    return {"hard": [], "soft_1": ["front"], "soft_2": ["end"], "soft_12": ["front", "end"],
            "soft_1_plus_2": ["front", "end"]}[target_type]


def soft_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, multilabel: bool) -> torch.Tensor:
    """Cross-entropy to the teacher's softened distribution (sigmoid per attribute when multi-label)."""
    logits, teacher_logits = logits / temperature, teacher_logits / temperature
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(teacher_logits))
    return -(F.softmax(teacher_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def target_loss(logits, labels, teacher_logits: dict, target_type: str, temperature: float, multilabel: bool):
    """The task part of the stitch loss for one batch (``teacher_logits`` maps 'front'/'end' to logits)."""
    if target_type == "hard":
        if multilabel:
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        return F.cross_entropy(logits, labels)
    if target_type == "soft_1_plus_2":
        return soft_loss(logits, (teacher_logits["front"] + teacher_logits["end"]) / 2, temperature, multilabel)
    teachers = teachers_needed(target_type)
    return sum(soft_loss(logits, teacher_logits[t], temperature, multilabel) for t in teachers) / len(teachers)


def batch_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Differentiable linear CKA of one batch (samples x flattened features), feature-space form."""
    x = x.flatten(1)
    y = y.flatten(1)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    if x.shape[1] * y.shape[1] > x.shape[0] ** 2:  # the Gram form is cheaper
        kx, ky = x @ x.t(), y @ y.t()
        return (kx * ky).sum() / (kx.norm() * ky.norm())
    return (y.t() @ x).pow(2).sum() / ((x.t() @ x).norm() * (y.t() @ y).norm())
