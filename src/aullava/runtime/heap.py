"""Give freed memory back to the system between batches, instead of letting glibc keep it as heap.

Why: a readout batch allocates and frees many tensors of a few MB (each pass's key/value cache is a fresh copy of
the text before the face, the face and the answer so far: ~2 MB per layer at 8 faces). glibc's malloc raises its
mmap threshold to the size of the largest block freed so far (up to 32 MB), so after the first batch such blocks
come from the heap, and the heap keeps what was freed: measured on the default model, 8 shared photos × three
formats left 360 MB of freed heap in the process (`malloc_trim` gave it back). Fixing the thresholds at 128 KiB
keeps every block above that in its own mapping, returned when freed (MODEL_CARD "Memory, 2026-12-06" has the peak
RSS and the speed with and without).

Process-wide and glibc-only: elsewhere (macOS, musl, Windows) `keep_heap_small` does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
THRESHOLD = 128 * 1024  # glibc's own starting value, held fixed
_applied = False


def keep_heap_small() -> bool:
    """Fix glibc's mmap and trim thresholds at 128 KiB for this process; True where applied (glibc only)."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                           THRESHOLD))
    except (OSError, AttributeError):
        return False
    return _applied
