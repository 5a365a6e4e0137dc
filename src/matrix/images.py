"""``images.png`` of a matrix with ``input`` among its end layers: one grid per front layer
(:mod:`src.stitching.images` makes each grid's images)."""
from typing import Any, Dict, List, Tuple

import numpy as np

from src.stitching.images import grid_of


def matrix_grids(images: Dict[str, Dict[str, Dict[str, Any]]]) -> List[Tuple[str, List[Tuple[str, np.ndarray]]]]:
    """The panels of ``images.png``: ``images`` maps each front layer to {objective: the result's ``images``}."""
    grids = []
    for front, by_objective in images.items():
        objective = next(iter(by_objective))
        grids.append(grid_of(front, by_objective[objective], by_objective.get("mse") if objective != "mse" else None,
                             objective=objective))
    return grids
