"""Process-level settings for CPU training loops.

:func:`retain_freed_memory` keeps glibc from handing large freed blocks back to the kernel. A
training step allocates and frees the same big tensors every step (the ``[num_nodes, dim]``
propagation buffers and gradients are 36 MB each on Gowalla at dim 128); glibc serves blocks above
its ``mmap`` threshold (at most 32 MB) with a fresh ``mmap`` and ``munmap``s them on ``free``, so
every step page-faults and zero-fills them again, at a few GB/s. PyTorch's CPU tuning guide swaps
in jemalloc or tcmalloc for the same reason; this needs no ``LD_PRELOAD``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_MAX = -4

ENV_VAR = "FEEDREC_RETAIN_FREED_MEMORY"


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc on Linux (``mallopt`` and ``malloc_trim`` exist), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # musl and other libcs have neither
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Hand memory that loading freed back to the kernel: Arrow's pool, then glibc's heap.

    Reading parquet leaves freed blocks in Arrow's allocator (mimalloc or jemalloc keep them for
    reuse) and small freed blocks in glibc's heap: on the ``large`` preset the two held 1 GB per
    process that the run never used again. :func:`retain_freed_memory` calls this first.
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def retain_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it (glibc ``mallopt``).

    Freed memory is then reused by the next step's allocations instead of being returned to the
    kernel and faulted in again. The process's resident size stays at its peak, which is what a
    training loop reaches every step anyway. What was freed *before* the call (loading, graph
    building) is handed back first (:func:`release_freed_memory`): call this when setup is done, not
    at import, or the heap keeps setup's peak for the whole run (4.5 GB per rank on the large
    preset). Set ``FEEDREC_RETAIN_FREED_MEMORY=0`` to opt out.

    Returns:
        bool: ``True`` when the setting took effect; ``False`` off Linux/glibc or when opted out.
    """
    if os.environ.get(ENV_VAR, "1") == "0":
        return False
    release_freed_memory()
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
