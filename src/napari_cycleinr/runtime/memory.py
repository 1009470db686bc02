"""Running out of memory: recognising it (without importing torch) and handing freed memory back."""

from __future__ import annotations

import sys


def out_of_memory(error: BaseException) -> bool:
    """Whether an exception means memory ran out: Python's MemoryError, torch's CUDA OutOfMemoryError, or
    the RuntimeError torch's CPU allocator raises."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    candidates = (
        getattr(torch, "OutOfMemoryError", None),
        getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None),
    )
    oom_types = tuple(t for t in candidates if isinstance(t, type))
    if oom_types and isinstance(error, oom_types):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise, and RSS would only ever grow)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
