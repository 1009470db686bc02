"""How inference is cut into work: slab depth, tile size and chunk sizes, per device."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InferenceOptions:
    slab: int = 4
    """Input slices per step: the encoder streams through z this many at a time (the generic path encodes
    slabs of this many plus a halo)."""
    tile: int = 256
    """In-plane tile edge in pixels. The 12-block encoder recomputes a 29-pixel halo around each tile: at 160
    (tiles of 128 on a 512 grid) that was 2.1x the tile's own encoder work, at 256 it is 1.5x; 512x512x60 at
    x5 went from 42 to 38 s for about 200 MB more memory (docs/performance.md)."""
    pixels_per_call: int = 2048
    slices_per_call: int = 4
    """Queries per decoder call = pixels x slices: about 8,000 keeps the MLP in cache on CPU (4,000 and
    16,000 were slower)."""
    amp: bool = True
    """bfloat16 where the device computes it natively: the whole fast path on CUDA; the encoder on a CPU with
    AMX or AVX512-BF16 (3x faster there; the decoder stays float32, where bf16 was slower). False: float32."""
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
