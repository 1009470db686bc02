"""Devices: which one a run uses, and moving tensors between it and the host."""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import numpy as np
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.runtime.blocks import Block

Finish = Callable[[torch.Tensor], torch.Tensor]
"""What turns a block's values into the output's values on the device (e.g. denormalise and round)."""


def resolve_device(name: str | torch.device | None) -> torch.device:
    """'auto' takes the GPU when there is one; naming cuda without one is an error, not a silent fallback."""
    if isinstance(name, torch.device):
        return name
    key = (name or "auto").strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise CycleINRError("cuda was asked for but no CUDA GPU is available here; choose the cpu or auto device")
        try:
            device = torch.device(key)
        except RuntimeError:
            raise CycleINRError(f"unknown device {name!r}; choose auto, cpu or cuda") from None
        if (device.index or 0) >= torch.cuda.device_count():
            raise CycleINRError(f"{name} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return device
    raise CycleINRError(f"unknown device {name!r}; choose auto, cpu or cuda")


@functools.cache
def cpu_computes_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), where bf16 convolutions run 3-4
    times as fast as float32; elsewhere they are emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and torch.backends.mkldnn.is_available()
    except (AttributeError, RuntimeError):
        return False


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def compiled(function: Callable) -> Callable:
    """torch.compile where it works; the first failure falls back to eager for good."""
    try:
        compiled = torch.compile(function, dynamic=True)
    except Exception:  # noqa: BLE001 - an optional speed-up must never stop inference
        return function
    state = {"ok": True}

    def run(*args, **kwargs):
        if state["ok"]:
            try:
                return compiled(*args, **kwargs)
            except Exception:  # noqa: BLE001
                state["ok"] = False
        return function(*args, **kwargs)

    return run


def blocks_to_host(
    results: Iterator[tuple[slice, slice, slice, torch.Tensor]], device: torch.device, finish: Finish | None
) -> Iterator[Block]:
    """Blocks on the host. On CUDA the copy of a block runs while the GPU computes the next one."""
    pending: tuple[Block, torch.cuda.Event] | None = None
    for out_slices, rows, cols, values in results:
        if finish is not None:
            values = finish(values)
        if device.type != "cuda":
            yield Block(out_slices, rows, cols, values.cpu().numpy())
            continue
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        if pending is not None:
            pending[1].synchronize()
            yield pending[0]
        pending = (Block(out_slices, rows, cols, host.numpy()), event)
    if pending is not None:
        pending[1].synchronize()
        yield pending[0]
