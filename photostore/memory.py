"""Handing freed heap memory back to the system (glibc), so long-running processes idle near
their working size rather than at their peak."""
from __future__ import annotations

import ctypes
import functools
from typing import Any

M_ARENA_MAX = -8  # mallopt parameter
# glibc's default (8 per core) multiplies the idle heap of processes with many busy threads.
MALLOC_ARENAS = 2


@functools.cache
def _libc() -> Any:
    """glibc with its arenas capped, or None (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
        return libc
    except (OSError, AttributeError):
        return None


def release_memory() -> None:
    """Returns the free heap to the system; call when work goes idle (cheap: milliseconds)."""
    if (libc := _libc()) is not None:
        libc.malloc_trim(0)
