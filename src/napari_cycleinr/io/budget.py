"""How much memory a file may cost to read, decided from its header before anything is allocated.

The limit is the memory the system can give now (MemAvailable, or the container's cgroup limit if lower), or
CYCLEINR_MAX_MEMORY_GB when set: a shared server can keep one user's 2 GB upload from taking everything.
Readers compute what a file will really cost (the voxels as stored, plus the scaled copy when the header
scales them) and call `check_affordable` first, so a 1 MB file that inflates to gigabytes is refused in
milliseconds instead of after it has been decompressed.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

from napari_cycleinr.errors import CycleINRError

MEMORY_VARIABLE = "CYCLEINR_MAX_MEMORY_GB"
GIB = 2**30
_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
)


def configured_limit_bytes() -> int | None:
    """CYCLEINR_MAX_MEMORY_GB in bytes, None when unset; anything but a positive number is one clear error."""
    text = os.environ.get(MEMORY_VARIABLE, "").strip()
    if not text:
        return None
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = math.nan
    if not (math.isfinite(gigabytes) and gigabytes > 0):
        raise CycleINRError(f"{MEMORY_VARIABLE} must be a positive number of gigabytes, e.g. 8; got {text!r}")
    return int(gigabytes * GIB)


def cgroup_available_bytes() -> int | None:
    """What the container (cgroup) still allows this process, or None outside a memory-limited cgroup:
    /proc/meminfo shows the host's memory, which a container cannot use."""
    for limit_file, usage_file in _CGROUP_FILES:
        with contextlib.suppress(OSError, ValueError):
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:  # unlimited
                return None
            return max(0, int(limit) - int(Path(usage_file).read_text().strip()))
    return None


def check_affordable(needed: int, path: Path, shape: tuple[int, ...], available: int | None) -> None:
    """Refuse a read that would cost `needed` bytes beyond the limit: CYCLEINR_MAX_MEMORY_GB when set,
    else `available` (the readers pass io.available_memory_bytes(), which includes the cgroup's limit)."""
    from napari_cycleinr.io import unreadable

    configured = configured_limit_bytes()
    if configured is not None and needed > configured:
        raise unreadable(
            path,
            f"shape {tuple(shape)} needs {_amount(needed)} to read, more than the {MEMORY_VARIABLE} "
            f"limit of {_amount(configured)}",
        )
    if configured is None and available is not None and needed > available:
        raise unreadable(
            path,
            f"shape {tuple(shape)} needs {needed / GIB:.1f} GiB, only {available / GIB:.1f} GiB free "
            f"(crop the volume, or free memory; {MEMORY_VARIABLE} sets the limit)",
        )


def _amount(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / 2**20:.0f} MiB"
