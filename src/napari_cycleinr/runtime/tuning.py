"""How inference is cut into work: slab depth, tile size and chunk sizes, per device."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InferenceOptions:
    slab: int = 4
    """Input slices per step: the encoder streams through z this many at a time (the generic path encodes
    slabs of this many plus a halo)."""
    tile: int = 160
    """In-plane tile edge in pixels (the encoder recomputes a halo of a few pixels around it)."""
    pixels_per_call: int = 1024
    slices_per_call: int = 4
    """Queries per decoder call = pixels x slices: a few thousand keeps the MLP in cache on CPU."""
    amp: bool = True
    """bf16 on CUDA (ignored on CPU, which stays float32)."""
    fast: bool = True
    """The streaming, refolded evaluation (same function as the model's own decode, ~1e-6 apart)."""
    threads: int = 0
    """CPU threads for torch during inference; 0 chooses (see choose_threads)."""
    compile: bool = False
    """torch.compile the decoder on CUDA (falls back to eager if it fails)."""

    @classmethod
    def for_device(cls, device: torch.device) -> InferenceOptions:
        if device.type == "cuda":
            return cls(slab=8, tile=512, pixels_per_call=65536, slices_per_call=8)
        return cls()
