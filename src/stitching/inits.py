"""Initial weights (``--init``) and masks (``--mask``) of the stitch.

Inits: ``random`` (PyTorch's default layer init, seeded by ``--seed``), ``perm`` (a random
permutation matrix), ``eye`` (the identity), ``ones-zeros`` (all-ones weight, zero bias) - these
three need equal widths - and ``ps_inv`` (the least-squares fit with bias of the end activation on
the front activation over the training split; for a rank-R stitch the optimal rank-R least-squares
fit, i.e. reduced-rank regression).

Masks (a 0/1 matrix of W's shape; masked weights stay 0): ``identity`` (no mask), ``semi-match``
(each end channel is connected to the front channel it correlates with most, on the training
split), ``abs-semi-match`` (the same on absolute correlation), ``random-permutation`` (a random
permutation matrix; equal widths).

The identity-like inits and the masks are defined where the stitch's weight maps features to
features (every kind but ``strided_conv``, whose inputs are k x k patch entries); elsewhere they are
refused with one line. ``random`` and ``ps_inv`` work for every kind.
"""
from typing import Optional

import numpy as np
import torch

from src.errors import UserError
from src.similarity import LeastSquaresFit
from src.stitching.affine import AffineStitch

INITS = ("random", "perm", "eye", "ps_inv", "ones-zeros")
MASKS = ("identity", "semi-match", "abs-semi-match", "random-permutation")
NEEDS_STATISTICS_INITS = ("ps_inv",)
NEEDS_STATISTICS_MASKS = ("semi-match", "abs-semi-match")


def _require_channel_map(stitch: AffineStitch, what: str) -> None:
    """Masks and the identity-like inits need a weight whose inputs are features, not patch entries."""
    if not stitch.kind.channel_map:
        raise UserError(f"{what} is not defined for a {stitch.kind.describe()} stitch: its weight maps patch "
                        f"entries ({stitch.in_features}) to channels ({stitch.out_features}); use --init random or "
                        f"ps_inv and --mask identity")


def _require_square(stitch: AffineStitch, what: str) -> int:
    _require_channel_map(stitch, what)
    if stitch.in_features != stitch.out_features:
        raise UserError(f"{what} needs equal widths on both sides, but the stitch maps {stitch.in_features} "
                        f"to {stitch.out_features} features; use --init random or ps_inv")
    return stitch.in_features


def check_options(stitch: AffineStitch, init: str, mask: str) -> None:
    """Refuse an init or mask that cannot work for this stitch before any data is touched."""
    if init not in INITS:
        raise UserError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if mask not in MASKS:
        raise UserError(f"unknown mask {mask!r}; choose one of {', '.join(MASKS)}")
    if init in ("perm", "eye", "ones-zeros"):
        _require_square(stitch, f"--init {init}")
    if mask == "random-permutation":
        _require_square(stitch, "--mask random-permutation")
    elif mask != "identity":
        _require_channel_map(stitch, f"--mask {mask}")


def permutation_matrix(n: int, gen: torch.Generator) -> np.ndarray:
    """A uniformly random n x n permutation matrix (exactly one 1 per row and per column)."""
    perm = torch.randperm(n, generator=gen).numpy()
    matrix = np.zeros((n, n))
    matrix[np.arange(n), perm] = 1.0
    return matrix


def least_squares_weights(fit: LeastSquaresFit, rank: Optional[int]) -> dict:
    """The least-squares map ``{'w', 'b'}``; rank-R reduced-rank regression when ``rank`` is set."""
    return fit.solve() if rank is None else fit.solve_reduced_rank([rank])[rank]


def initialize(stitch: AffineStitch, init: str, gen: torch.Generator, fit: Optional[LeastSquaresFit] = None) -> None:
    """Set the stitch's weights according to ``init`` (``fit`` is needed for ps_inv)."""
    if init == "random":
        return  # the layer was created with its default initialisation under the run's seed
    if init == "ps_inv":
        if fit is None:
            raise ValueError("ps_inv needs the least-squares statistics")
        weights = least_squares_weights(fit, stitch.rank)
        stitch.set_affine(weights["w"], weights["b"])
        return
    if init in ("perm", "eye", "ones-zeros"):
        n = _require_square(stitch, f"--init {init}")
        w = {"perm": lambda: permutation_matrix(n, gen), "eye": lambda: np.eye(n), "ones-zeros": lambda: np.ones((n, n))}[init]()
        stitch.set_affine(w, np.zeros(n))
        return
    raise UserError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")


def build_mask(stitch: AffineStitch, mask: str, gen: torch.Generator, fit: Optional[LeastSquaresFit] = None) -> Optional[np.ndarray]:
    """The (out x in) 0/1 mask for ``mask``, or None for ``identity``."""
    if mask == "identity":
        return None
    if mask in NEEDS_STATISTICS_MASKS:
        _require_channel_map(stitch, f"--mask {mask}")
        if fit is None:
            raise ValueError(f"{mask} needs the correlation statistics")
        corr = fit.correlation()  # (in, out)
        if mask == "abs-semi-match":
            corr = np.abs(corr)
        best_source = corr.argmax(axis=0)  # for every end channel, its most correlated front channel
        out = np.zeros((stitch.out_features, stitch.in_features))
        out[np.arange(stitch.out_features), best_source] = 1.0
        return out
    if mask == "random-permutation":
        return permutation_matrix(_require_square(stitch, "--mask random-permutation"), gen)
    raise UserError(f"unknown mask {mask!r}; choose one of {', '.join(MASKS)}")
