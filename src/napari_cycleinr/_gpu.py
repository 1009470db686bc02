"""Is there a CUDA GPU? Answered when Run is pressed, before the worker imports torch (seconds).

Only a definite "no" is answered: a CPU-only torch build, macOS, or no NVIDIA driver on the machine. Anything
else (a driver, a CUDA build) may still fail later, and the runner's own device check then explains it.
"""

from __future__ import annotations

import ctypes.util
import sys
from importlib import metadata
from pathlib import Path

NO_GPU_FOR_CUDA = "device cuda: {reason}; choose the device auto or cpu"


def no_cuda_reason() -> str | None:
    """Why torch cannot use a CUDA GPU here, found without importing torch; None when it may."""
    torch = sys.modules.get("torch")
    if torch is not None:  # already imported by an earlier run: ask it (cheap now)
        return None if torch.cuda.is_available() else "no CUDA GPU found"
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None  # the worker explains a missing torch
    if "+cpu" in version:
        return f"no CUDA GPU can be used (torch {version} is a CPU-only build)"
    if sys.platform == "darwin":
        return "no CUDA GPU found (macOS has no CUDA)"
    if not _nvidia_driver_present():
        return "no CUDA GPU found (no NVIDIA driver on this machine)"
    return None


def _nvidia_driver_present() -> bool:
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia").exists()  # the kernel driver; no subprocess, no library loaded
    if sys.platform == "win32":
        return ctypes.util.find_library("nvcuda") is not None
    return True  # another system: let torch answer
