"""The process's heap: freed memory kept for reuse instead of handed back to the OS (glibc's ``mallopt``).

PyTorch's CPU tensors come from ``malloc``. glibc hands freed memory back to the OS once more than its trim
threshold lies free at the top of the heap (and serves large blocks by ``mmap``, unmapped when freed), and every
new tensor then faults its pages in again, zeroed by the kernel. The Δθ inversion allocates a dozen flat
``[rows, P]`` buffers per evaluation (27 MB each at 32 rows of the default supernet): about 370,000 minor page
faults per evaluation, which kept memory spares (1.21x at 32 rows, ``results/bench-inversion/``).

:func:`retain_freed_memory` serves blocks up to 32 MiB (glibc's largest allowed threshold) from the heap and never
trims it, what ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would do if set before the process
started. The price is that a process keeps its peak heap; it is applied at the boundary of processes that attack
(the ``archleak`` commands and the interceptor's worker), never by library code. ``ARCHLEAK_RETAIN_HEAP=0`` leaves
glibc's defaults, so the ratio stays measurable.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20     # glibc's largest allowed value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2 ** 31 - 1  # mallopt takes an int: never trim below 2 GiB of free top
ENV = "ARCHLEAK_RETAIN_HEAP"
_STATE = {"retained": False}


def retained() -> bool:
    """Whether :func:`retain_freed_memory` took effect in this process (benchmarks record it)."""
    return _STATE["retained"]


def retain_freed_memory() -> bool:
    """Whether glibc now keeps freed memory (False: turned off by ``ARCHLEAK_RETAIN_HEAP=0``, or not glibc)."""
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt    # the process's own symbols: glibc's, with no ldconfig lookup
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _STATE["retained"] = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                          TRIM_THRESHOLD))
    return _STATE["retained"]
