"""Keep freed memory in the process: the C allocator setting that makes CPU adaptation steps fast.

glibc's ``malloc`` serves a block above its mmap threshold (dynamic, at most 32 MiB) with a fresh ``mmap``,
and gives the free memory at the top of its heap back to the system beyond its trim threshold. One MZSR
adaptation step on a 256x256 LR image allocates and frees about 350 MiB of activations, so every step
touches fresh pages again: 90,000 minor page faults per step at one thread on an AVX-512 EPYC. Kept, the
step took 0.92x, the 512x512 SR forward 0.78x and a second-order meta-iteration 0.95x the time with glibc's
defaults (2 threads, quiet; ``python benchmarks/bench_cpu_paths.py --threads 2 --rounds 2``,
``benchmarks/results/cpu_paths.json``). TensorFlow keeps its own pool, which was part of why its graph was
faster.

:func:`retain_freed_memory` raises both thresholds, so freed blocks stay in the process for the next step.
The cost: the process keeps up to ``limit_bytes`` of freed memory instead of returning it. The command line
(``metasr ...``) calls it at start (``METASR_RETAIN_FREED_MEMORY=0`` turns that off); library users call it
once themselves, since a library should not change its host process's allocator unasked.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

__all__ = ["retain_freed_memory", "retain_from_environment", "allocator_settings", "DEFAULT_RETAINED_BYTES"]

#: freed memory kept by default: 2 GiB, the largest glibc takes (an int), above the ~1.4 GiB working set of
#: an adaptation step on a 512x512 LR image (a smaller limit trims the whole free top of the heap each step)
DEFAULT_RETAINED_BYTES = (1 << 31) - 1

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3

_settings: dict[str, object] = {"retain_freed_memory": False}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def retain_freed_memory(limit_bytes: int = DEFAULT_RETAINED_BYTES) -> bool:
    """Have glibc keep freed blocks up to ``limit_bytes`` for reuse instead of unmapping or trimming them.

    Returns True when the setting took effect, False where it does not apply (not Linux with glibc: other
    allocators keep freed memory by themselves or take their own settings, e.g. jemalloc's). Process-wide
    and cheap; calling it again changes the limit.
    """
    limit = int(limit_bytes)
    if limit < 1 << 20 or limit > (1 << 31) - 1:
        raise ValueError(f"limit_bytes={limit_bytes}: use 1 MiB .. 2 GiB - 1 (glibc takes an int)")
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    # blocks up to the limit come from the heap (no fresh mmap per block), and up to the limit of free memory
    # stays at its top (no trim after each step)
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, limit))
    if ok:
        _settings.update(retain_freed_memory=True, limit_bytes=limit)
    return ok


def retain_from_environment() -> bool:
    """The command line's default: :func:`retain_freed_memory` unless ``METASR_RETAIN_FREED_MEMORY`` is
    ``0``/``false``/``no``; a number there is the limit in bytes."""
    value = os.environ.get("METASR_RETAIN_FREED_MEMORY", "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value and value not in ("1", "true", "yes", "on"):
        try:
            limit = int(value)
        except ValueError:
            raise ValueError(f"METASR_RETAIN_FREED_MEMORY={value!r}: use 0 (off), 1 (on) or a limit in bytes") from None
        return retain_freed_memory(limit)
    return retain_freed_memory()


def allocator_settings() -> dict[str, object]:
    """What this module set in this process (for benchmark records)."""
    return dict(_settings)
