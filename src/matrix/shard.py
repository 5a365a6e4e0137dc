"""Deterministic slices of a matrix's cells: ``--shard K/N`` (job arrays) and one slice per torchrun rank.

The cells are in plan order (variant, then front layer, then end layer), and a slice is a
contiguous run of them of near-equal length. So the cells of one front layer stay together: a slice
builds each front layer's activation cache once, and at most ``N - 1`` front layers are split between
two neighbouring slices (each then builds that cache once too). The slices depend only on the plan, never
on what ran before, so every process computes the same partition.
"""
import re
from typing import List, Optional, Sequence, Tuple, TypeVar

from src.errors import UserError

T = TypeVar("T")


def parse_shard(text: str) -> Tuple[int, int]:
    """``'K/N'`` -> ``(K, N)`` with 1 <= K <= N (K counts from 1, as ``$((SLURM_ARRAY_TASK_ID+1))`` does)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise UserError(f"--shard takes K/N (the K-th of N slices, K from 1), not {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= k <= n:
        raise UserError(f"--shard {text}: K must be between 1 and N (got K={k}, N={n})")
    return k, n


def slice_bounds(total: int, index: int, count: int) -> Tuple[int, int]:
    """``[start, stop)`` of slice ``index`` (from 0) of ``count`` near-equal contiguous slices of ``total`` items."""
    return index * total // count, (index + 1) * total // count


def take_slice(items: Sequence[T], index: int, count: int) -> List[T]:
    start, stop = slice_bounds(len(items), index, count)
    return list(items[start:stop])


def cells_for(cells: Sequence[T], shard: Optional[Tuple[int, int]], rank: int = 0, world_size: int = 1) -> List[T]:
    """The cells this process runs: its ``--shard`` slice (K/N, K from 1), then its rank's slice of that."""
    mine = list(cells)
    if shard is not None:
        mine = take_slice(mine, shard[0] - 1, shard[1])
    return take_slice(mine, rank, world_size)
