"""The generic tiler: any predictor, applied to slabs of input slices and in-plane tiles with halos.

Like MONAI's `sliding_window_inference`, the tiler owns the windows and the predictor owns the maths. Each
window is the part of the input a tile of output depends on: the slab of input slices that holds the output
slices' lower neighbours, widened by `z_halo` slices, and an in-plane tile widened by `xy_halo` pixels. With
halos as wide as the predictor's receptive field, the tiled answer equals the whole-volume one.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch

from napari_cycleinr.runtime.blocks import Block, CancelCheck, owner_ranges, raise_if_cancelled

Predictor = Callable[[torch.Tensor, torch.Tensor, tuple[slice, slice]], torch.Tensor]
"""predictor(window (Z, Y, X) on the device, positions (Q,) of the output slices in the window's slice units,
(rows, cols) of the window whose answer is wanted) -> (Q, rows, cols) float32 on the device."""


def tiled_blocks(
    lr: np.ndarray,
    positions: np.ndarray,
    predictor: Predictor,
    *,
    slab: int,
    tile: int,
    z_halo: int,
    xy_halo: int,
    device: torch.device,
    cancel: CancelCheck | None = None,
) -> Iterator[Block]:
    """Blocks of predictor output for output slices at `positions` (input-slice units, sorted)."""
    n, h, w = lr.shape
    for start, stop, j0, j1 in owner_ranges(positions, n, slab):
        lo, hi = max(0, start - z_halo), min(n, stop + z_halo)
        local = torch.from_numpy(np.ascontiguousarray(positions[j0:j1] - lo)).to(device)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                raise_if_cancelled(cancel)
                y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
                ylo, yhi = max(0, y0 - xy_halo), min(h, y1 + xy_halo)
                xlo, xhi = max(0, x0 - xy_halo), min(w, x1 + xy_halo)
                window = torch.from_numpy(np.ascontiguousarray(lr[lo:hi, ylo:yhi, xlo:xhi])).to(device)
                values = predictor(window, local, (slice(y0 - ylo, y1 - ylo), slice(x0 - xlo, x1 - xlo)))
                yield Block(slice(j0, j1), slice(y0, y1), slice(x0, x1), values.cpu().numpy())


def count_tiled_blocks(positions: np.ndarray, shape: tuple[int, int, int], slab: int, tile: int) -> int:
    """How many blocks tiled_blocks yields, for an honest progress bar."""
    tiles = math.ceil(shape[1] / tile) * math.ceil(shape[2] / tile)
    return len(owner_ranges(positions, shape[0], slab)) * tiles


def balanced_tiles(length: int, tile: int) -> list[slice]:
    """ceil(length / tile) near-equal parts: 512 px at tile 160 is 4 x 128, not 3 x 160 and a thin 32."""
    parts = math.ceil(length / tile)
    edges = [round(i * length / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def inner_pixels(h: int, w: int, rows: slice, cols: slice, device: torch.device) -> torch.Tensor:
    """Flat indices of a tile's interior (rows, cols) in its (h, w) window."""
    flat_rows = torch.arange(rows.start, rows.stop, device=device)[:, None] * w
    return (flat_rows + torch.arange(cols.start, cols.stop, device=device)[None, :]).reshape(-1)
