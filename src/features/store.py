"""Keeping the activations of a whole data set (float32, CPU) with a memory check up front.

Measures that need every sample at once (full-data CKA, CCA, Procrustes, ...) cannot stream;
:class:`ActivationStore` collects the batches of each layer and refuses, with a hint to use fewer
samples, as soon as it is clear that they will not fit in memory.
"""
import os
from typing import List, Optional, Sequence

import torch

from src.errors import UserError

#: Fraction of the available memory that stored activations (and Gram matrices) may take.
MEMORY_FRACTION = 0.6
GIB = float(1 << 30)


def available_memory(device: Optional[torch.device] = None) -> Optional[int]:
    """Bytes that can still be allocated on ``device`` (CPU: MemAvailable of /proc/meminfo), or None."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str, hint: str, device: Optional[torch.device] = None,
                 limit: Optional[int] = None) -> None:
    """UserError when ``needed`` bytes exceed ``limit`` (default: a fraction of the available memory)."""
    if limit is None:
        available = available_memory(device)
        if available is None:
            return
        limit = int(available * MEMORY_FRACTION)
    if needed > limit:
        raise UserError(f"{what} needs {needed / GIB:.2f} GiB but only {limit / GIB:.2f} GiB may be used; {hint}")


class ActivationStore:
    """Activations of ``layers`` for every sample, as float32 CPU tensors (``N x ...``, shapes kept) per layer.

    ``expected_samples`` (when known) lets the first :meth:`add` check the whole data set's size
    before anything big is kept; otherwise every :meth:`add` checks what has been kept so far.
    ``limit_bytes`` overrides the default limit (a fraction of the available memory).
    """

    HINT = "use fewer samples (--samples / max_samples) or select fewer layers"

    def __init__(self, layers: Sequence[str], expected_samples: Optional[int] = None,
                 limit_bytes: Optional[int] = None, what: str = "storing the activations"):
        self.layers = list(layers)
        self.expected_samples = expected_samples
        self.limit_bytes = limit_bytes
        self.what = what
        self._parts: List[List[torch.Tensor]] = [[] for _ in self.layers]
        self.n = 0
        self.bytes = 0

    def per_sample_bytes(self, outputs: Sequence[torch.Tensor]) -> int:
        return 4 * sum(int(t[0].numel()) for t in outputs)

    def add(self, outputs: Sequence[torch.Tensor]) -> None:
        """Keep one batch (one tensor per layer, same order as ``layers``)."""
        if len(outputs) != len(self.layers):
            raise ValueError("one output per layer expected")
        n = int(outputs[0].shape[0])
        per_sample = self.per_sample_bytes(outputs)
        total = max(self.expected_samples or 0, self.n + n)
        check_memory(per_sample * total, f"{self.what} of {total} samples ({len(self.layers)} layers)", self.HINT,
                     limit=self.limit_bytes)
        for part, out in zip(self._parts, outputs):
            part.append(out.detach().to("cpu", torch.float32))
        self.n += n
        self.bytes += per_sample * n

    def tensors(self) -> List[torch.Tensor]:
        """One ``N x ...`` float32 tensor per layer (the batches concatenated; the parts are released)."""
        if self.n == 0:
            raise UserError("no samples were seen; the loader yielded no batches")
        joined = [torch.cat(part) if len(part) > 1 else part[0] for part in self._parts]
        self._parts = [[t] for t in joined]
        return joined
