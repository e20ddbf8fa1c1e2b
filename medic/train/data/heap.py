"""How the process's heap treats large freed buffers (glibc's ``mallopt``; elsewhere nothing).

    while the cache fills   freed buffers go back to the system (``return_freed_buffers``)
    once it is full         a training step's buffers stay for reuse (``keep_working_buffers``)
"""

from __future__ import annotations

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _mallopt(*settings: tuple[int, int]) -> None:
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        for param, value in settings:
            libc.mallopt(param, value)
    except (OSError, AttributeError):  # not glibc
        pass


def return_freed_buffers() -> None:
    """While the cache fills. glibc raises its mmap threshold after large blocks are freed, so the
    buffers that loading and preprocessing a volume free then stay in the heap: without this the
    process keeps about five times the cache's size. A fixed 1 MB threshold gives them back."""
    _mallopt((M_MMAP_THRESHOLD, 1 << 20))


def keep_working_buffers() -> None:
    """Once the cache is full: the training step's and the sliding window's buffers (a few MB
    each, allocated and freed at every step) are kept for reuse, as glibc's own adaptive threshold
    would end up doing (32 MB; the heap trimmed above twice that). With the 1 MB threshold each
    of them was a fresh mapping, and page faults cost a third of a 3D epoch on a CPU."""
    _mallopt((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 64 << 20))
