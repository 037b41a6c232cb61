"""retain_freed_memory(): large blocks come from the heap (reused after free), not from mmap."""

import os
import subprocess
import sys
import textwrap

import pytest

# Allocates a 64 MB tensor and prints how many bytes glibc's malloc serves through mmap for it
# (mallinfo2().hblkhd): such blocks are unmapped on free and faulted in again on the next step.
_PROBE = textwrap.dedent(
    """
    import ctypes, sys, torch
    from recsys.runtime import retain_freed_memory
    applied = retain_freed_memory() if sys.argv[1] == "retain" else False
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        print(applied, -1)
        sys.exit(0)
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblkhd
    block = torch.ones(16 * 2**20)
    print(applied, libc.mallinfo2().hblkhd - before)
    """
)


def _probe(mode: str, env: dict | None = None) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env)
    applied, mapped = out.stdout.split()
    return applied, int(mapped)


def _has_mallinfo2() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2) to observe malloc")
def test_large_blocks_come_from_the_heap_once_retained():
    applied, retained = _probe("retain")
    _, default = _probe("default")
    assert applied == "True"
    assert default >= 64 * 2**20  # glibc's default: a fresh mmap per 64 MB block
    assert retained == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe loads glibc (Linux)")
def test_opting_out_leaves_malloc_alone():
    env = {**os.environ, "FEEDREC_RETAIN_FREED_MEMORY": "0"}
    applied, _ = _probe("retain", env)
    assert applied == "False"


def test_release_freed_memory_returns_what_was_freed():
    # a heap block freed under the trim threshold stays resident until malloc_trim hands it back
    code = textwrap.dedent(
        """
        import ctypes, gc
        from recsys.runtime import release_freed_memory
        def rss():
            return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1])
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 2**30)  # M_MMAP_THRESHOLD: serve the blocks below from the heap
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD: and keep them after free
        blocks = [bytearray(1 << 20) for _ in range(200)]
        del blocks; gc.collect()
        before = rss()
        release_freed_memory()
        print(before - rss())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert int(out.stdout) > 100_000  # kB: most of the 200 MB
