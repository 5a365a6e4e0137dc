"""What the stitch is trained to do (``--objective``).

- ``task`` (default, the "vanilla" stitch of Hernandez et al. 2022): minimise the task loss of the
  stitched network (``--target-type``: labels or soft targets) - the stitch may hand the end
  anything that classifies well.
- ``mse`` (the "similarity" stitch): minimise the mean squared error between the stitch's output
  and the end network's own activation at the end layer (both networks frozen, the same training
  batches), averaged over every element of the batch. The stitched network's task accuracy is still
  measured and stored, as for any stitch.
- ``both`` (``stitch_matrix.py`` only): one ``task`` and one ``mse`` stitch per cell from the same
  initialisation, and the EV / ES / SV statistics between them (:mod:`src.matrix.evess`).

For the affine stitch kinds (every kind of :mod:`src.stitching.kinds`) the ``mse`` loss is
``sum_rows ||W x + b - y||^2 / (rows x out_features)`` over the kind's least-squares design rows, so
its exact minimiser is the closed-form least-squares fit ``-i ps_inv`` (reported for every stitch as
``ps_inv``): gradient training with ``mse`` converges to it (``tests/stitching/test_stitching_objectives.py``
checks this against a bound from the gradient at the stopping point and the conditioning). The
low-rank stitch (``-r``) is the exception: its reduced-rank closed form minimises the same loss,
but gradient descent on the two factors is not guaranteed to reach it; and a kind without a
closed form (none today; any future non-affine kind) can only be trained by gradient descent.
The ``--l1`` and ``--cka-reg`` terms add to either objective.
"""
from typing import Dict

import torch
from torch.nn import functional as F

from src.errors import UserError
from src.stitching.losses import target_loss

OBJECTIVES = ("task", "mse")
MATRIX_OBJECTIVES = OBJECTIVES + ("both",)


def check_objective(objective: str, matrix: bool = False) -> None:
    """A known objective; ``both`` only for a matrix (it trains two stitches per cell)."""
    allowed = MATRIX_OBJECTIVES if matrix else OBJECTIVES
    if objective not in allowed:
        hint = " (both trains two stitches per cell: use stitch_matrix.py)" if objective == "both" else ""
        raise UserError(f"unknown --objective {objective!r}; choose one of {', '.join(allowed)}{hint}")


def needs_end_target(objective: str, cka_reg: float) -> bool:
    """Whether training batches must carry the end network's own activation (``batch['end_target']``)."""
    return objective == "mse" or bool(cka_reg)


def objective_loss(objective: str, logits: torch.Tensor, stitched: torch.Tensor, batch: Dict, target_type: str,
                   temperature: float, multilabel: bool) -> torch.Tensor:
    """The loss of one batch before the regularisers: the task loss, or the MSE to the end network's activation."""
    if objective == "mse":
        return F.mse_loss(stitched, batch["end_target"])
    return target_loss(logits, batch["labels"], batch["teachers"], target_type, temperature, multilabel)
