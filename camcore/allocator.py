"""Keep freed memory for reuse: glibc ``malloc`` settings for processes that run CNN forward passes.

A forward pass of EfficientNet-Lite0 on 16 images at 448 px allocates and frees activation
tensors of tens to hundreds of MiB, layer after layer. glibc serves blocks above its mmap
threshold (128 KiB to 32 MiB, adaptive) with fresh ``mmap`` calls and returns them to the kernel
on ``free``, so every pass faults every page of every activation in again: on the 2-core
development VM (EfficientNet-Lite0, 16 images at 448 px) that was ~22k minor page faults and
~46 ms of kernel time per image, as much as the convolutions themselves. :func:`keep_freed_memory` makes the heap keep those blocks
(``M_MMAP_THRESHOLD`` 1 GiB, ``M_TRIM_THRESHOLD`` 2 GiB) and puts every thread on the main heap
(``M_ARENA_MAX`` 1: a thread's own arena is capped at 64 MiB and would still ``mmap`` large
blocks), so later passes reuse pages already mapped.

Trade-off: the process keeps its peak heap (a worker holds on to the memory of its largest batch
instead of returning it between jobs). It is a process-wide setting, so camcore never applies it
on import: the worker process, the embedded worker and the benchmarks call it at start-up.
``CAMLABEL_KEEP_FREED_MEMORY=0`` turns it off; on a C library other than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading

__all__ = ["keep_freed_memory"]

# <malloc.h> parameter numbers for mallopt()
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # mallopt takes a C int
ENV_SWITCH = "CAMLABEL_KEEP_FREED_MEMORY"

_lock = threading.Lock()
_applied: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Apply the malloc settings above once per process; ``True`` if they are in effect.

    Call it early (before worker threads start allocating). Idempotent and thread-safe; does
    nothing (``False``) off glibc or when ``CAMLABEL_KEEP_FREED_MEMORY`` is ``0``/``false``/``no``.
    """
    global _applied
    with _lock:
        if _applied is not None:
            return _applied
        if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
            _applied = False
            return False
        libc = _glibc()
        if libc is None:
            _applied = False
            return False
        ok = (libc.mallopt(_M_ARENA_MAX, 1) == 1
              and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
        _applied = ok
        return ok
