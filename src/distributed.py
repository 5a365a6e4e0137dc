"""Several processes started by ``torchrun``: who this process is, the process group, and agreement.

``torchrun --nproc_per_node=N script.py ...`` starts N copies of a script and tells each its place
through the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, plus the rendezvous address).
:func:`world_from_env` reads that place without starting anything; :func:`session` opens the
process group (NCCL for CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on the CPU) and closes it.
Without torchrun, or with a single process, everything here is a no-op: one process behaves
exactly as if this module did not exist.

Rank 0 (the main rank) is the one that writes files; :func:`main_does` runs a step there and
makes its result, or its :class:`~src.errors.UserError`, known to every rank, so that a refusal
on rank 0 stops all ranks with the same one-line message instead of leaving them at a barrier.
"""
import os
from contextlib import contextmanager
from datetime import timedelta
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from src.errors import UserError

__all__ = ["World", "world_from_env", "session", "current_world", "barrier", "main_does", "broadcast_object",
           "all_gather_objects", "all_reduce_sum", "broadcast_buffers"]

_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its machine, its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name}={value!r} is not an integer; start the script with torchrun, "
                        f"or unset {', '.join(_ENV)} to run one process") from None


def world_from_env() -> World:
    """The place torchrun gave this process (``World()`` without torchrun); starts nothing."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise UserError(f"WORLD_SIZE={size}, RANK={rank}, LOCAL_RANK={local_rank} do not describe a process of a "
                        f"torchrun job; start the script with torchrun, or unset {', '.join(_ENV)} to run one process")
    return World(rank=rank, size=size, local_rank=local_rank)


def rank_device(world: World, device: torch.device) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun; the CPU stays the CPU."""
    device = torch.device(device)
    if not world.distributed or device.type != "cuda":
        return device
    if device.index is not None:
        raise UserError(f"under torchrun every process uses cuda:LOCAL_RANK, so --device/DEVICE {device} cannot be "
                        f"honoured; pass cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES")
    if world.local_rank >= torch.cuda.device_count():
        raise UserError(f"LOCAL_RANK {world.local_rank} has no GPU: only {torch.cuda.device_count()} are visible; "
                        f"start at most that many processes per machine (torchrun --nproc_per_node)")
    return torch.device("cuda", world.local_rank)


@contextmanager
def session(device, timeout: Optional[timedelta] = None) -> Iterator[World]:
    """``with session(device) as world:`` the process group for the duration of the block (torchrun only).

    Opens it with NCCL when this rank's device is CUDA (after ``torch.cuda.set_device``), else gloo,
    and destroys it on leaving; a process group opened by the caller is used and left open.
    ``timeout``: how long a collective (a barrier) may wait for the other ranks; torch's default when None.
    """
    world = world_from_env()
    world = replace(world, device=rank_device(world, device))
    if not world.distributed:
        yield world
        return
    if dist.is_initialized():
        yield world
        return
    if world.device.type == "cuda":
        torch.cuda.set_device(world.device)
    backend = "nccl" if world.device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size,
                            **({"timeout": timeout} if timeout is not None else {}))
    try:
        yield world
    finally:
        dist.destroy_process_group()


def current_world() -> World:
    """The world of the open process group (with this rank's device), else one process on the CPU."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    env = world_from_env()
    device = _collective_device()
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=env.local_rank, device=device)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _collective_device() -> torch.device:
    """Where tensors for collectives must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank is here (nothing to wait for in one process)."""
    if _active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled); ``obj`` itself in one process."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order; ``[obj]`` in one process."""
    if not _active():
        return [obj]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def main_does(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Run ``fn`` on rank 0 only; every rank returns its result, or raises its UserError with the same message.

    Other exceptions on rank 0 are reported to the other ranks as a RuntimeError naming them, and raised
    unchanged on rank 0. In one process this is ``fn(*args, **kwargs)``.
    """
    if not _active():
        return fn(*args, **kwargs)
    outcome: Optional[tuple] = None
    error: Optional[BaseException] = None
    if dist.get_rank() == 0:
        try:
            outcome = ("ok", fn(*args, **kwargs))
        except UserError as err:
            outcome, error = ("user", str(err)), err
        except Exception as err:  # noqa: BLE001 - reported to the other ranks, then re-raised here
            outcome, error = ("crash", f"{type(err).__name__} on rank 0: {err}"), err
    kind, value = broadcast_object(outcome)
    if error is not None:
        raise error
    if kind == "user":
        raise UserError(value)
    if kind == "crash":
        raise RuntimeError(value)
    return value


def all_reduce_sum(values: List[float]) -> List[float]:
    """The element-wise sum of ``values`` over all ranks (float64), the same on every rank; ``values`` in one process."""
    if not _active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (e.g. BatchNorm's running statistics, which plain BatchNorm keeps per rank)."""
    if not _active():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)
