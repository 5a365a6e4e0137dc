"""Keep freed memory in the process instead of handing it back to the kernel at every free (glibc).

glibc's ``malloc`` serves blocks above its mmap threshold with a fresh ``mmap`` and unmaps them when they
are freed, and gives the free top of its heap back once it exceeds the trim threshold. A CPU forward or
backward pass allocates and frees tensors of megabytes per layer and batch, so with the defaults every
batch pays for new pages again: page faults and the kernel zeroing them. On the 2-core CI machine a 4 x 4
stitch matrix spent 9.0 of its 52.7 CPU seconds in the kernel (3.9 million minor page faults); with the
thresholds below it took 20 s instead of 28 s of wall time (0.36 million faults). This is the problem
PyTorch's CPU performance guide solves by preloading jemalloc or tcmalloc; two ``mallopt`` calls solve it
with the allocator already there.

The cost: freed memory below the thresholds stays with the process (its resident size stays near its
peak) until it exits. :func:`keep_freed_memory` is called by the scripts (:func:`src.cli.run_main`) when
they run from a command line, not by the library; it leaves the allocator alone where the user has
chosen its settings (``MALLOC_*_`` variables, ``glibc.malloc`` tunables, another allocator preloaded) and
on systems without glibc.
"""
import ctypes
import os
from typing import Mapping, Optional

#: Blocks below this size come from the heap, not from their own mmap (tensors of one batch are far below).
MMAP_THRESHOLD = 256 << 20
#: The free top of the heap is returned to the kernel only above this size.
TRIM_THRESHOLD = 1 << 30
#: The largest mmap threshold older glibc versions accept (half their heap size of 64 MiB).
OLD_GLIBC_MMAP_LIMIT = 32 << 20

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                  "MALLOC_ARENA_MAX")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def user_has_chosen(environ: Mapping[str, str]) -> Optional[str]:
    """Why the allocator's settings are the user's (the variable that says so), or None."""
    for name in _USER_SETTINGS:
        if name in environ:
            return name
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    preload = environ.get("LD_PRELOAD", "")
    if any(name in preload for name in _OTHER_ALLOCATORS):
        return "LD_PRELOAD"
    return None


def keep_freed_memory(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when they were set."""
    if user_has_chosen(os.environ if environ is None else environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return False
    mmap_set = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, OLD_GLIBC_MMAP_LIMIT)
    return bool(mmap_set) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
