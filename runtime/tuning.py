"""Process-wide settings that make runs faster: one opt-in call, never made by a library function.

``import facecrop.runtime`` and :func:`~facecrop.runtime.load_bundle` change nothing in the caller's
process; the ``facecrop`` command calls :func:`tune_process` first, as an app that embeds the runtime may.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["tune_process"]


def tune_process() -> None:
    """Let glibc keep freed memory for reuse (elsewhere nothing), unless ``MALLOC_MMAP_THRESHOLD_`` is set.

    Opt-in, for the whole process: the ``facecrop`` CLI calls it; an app that embeds the runtime may.

    A module call allocates tens of MB of intermediates; handed back to the OS as they are freed,
    every batch page-faults them in anew: 22,800 faults and 30% of a 720p batch of 16 (measured).
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks up to 1 GiB from the heap
    mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD: keep the heap's top (up to 2 GiB)
    if "MALLOC_ARENA_MAX" not in os.environ:
        # M_ARENA_MAX: the module's worker threads (calls.py) share one heap; each with its own kept its own
        # peak (a folder of 20 clips: 775-785 instead of 810-875 MB at the peak, as fast).
        mallopt(-8, 1)
