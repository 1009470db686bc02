"""Interpolation baselines through the same block interface as the model, so they are compared fairly."""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import ndimage

from napari_cycleinr.runtime.blocks import Block, CancelCheck, raise_if_cancelled

BLOCK_VOXELS = 2_000_000


def slices_per_block(shape: tuple[int, ...]) -> int:
    return max(1, BLOCK_VOXELS // (shape[1] * shape[2]))


def linear_blocks(lr: np.ndarray, positions: np.ndarray, cancel: CancelCheck | None = None) -> Iterator[Block]:
    """Linear interpolation along z (trilinear, since the in-plane grid is unchanged), edges clamped.

    Evaluated with torch on all CPU threads; the float32 operations are those of the plain numpy formula
    lr[lower] * (1 - t) + lr[upper] * t, so the result is the same to the bit.
    """
    import torch

    n = lr.shape[0]
    z = np.clip(positions, 0.0, n - 1.0)
    lower = np.minimum(np.floor(z).astype(np.int64), max(n - 2, 0))
    upper = np.minimum(lower + 1, n - 1)
    t = (z - lower).astype(np.float32)
    source = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
    step = slices_per_block(lr.shape)
    for j0 in range(0, len(positions), step):
        raise_if_cancelled(cancel)
        j = slice(j0, min(len(positions), j0 + step))
        weight = torch.from_numpy(t[j]).view(-1, 1, 1)
        below = source[torch.from_numpy(lower[j])]
        above = source[torch.from_numpy(upper[j])]
        values = below.mul_(1.0 - weight).add_(above.mul_(weight))
        yield Block(j, slice(0, lr.shape[1]), slice(0, lr.shape[2]), values.numpy())


def cubic_blocks(lr: np.ndarray, positions: np.ndarray, cancel: CancelCheck | None = None) -> Iterator[Block]:
    """scipy cubic B-spline (order 3), prefiltered once; edges extend the nearest slice."""
    coefficients = ndimage.spline_filter(lr, order=3, output=np.float32, mode="nearest")
    _, h, w = lr.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    step = slices_per_block(lr.shape)
    for j0 in range(0, len(positions), step):
        raise_if_cancelled(cancel)
        j = slice(j0, min(len(positions), j0 + step))
        z = np.broadcast_to(positions[j].astype(np.float32)[:, None, None], (j.stop - j.start, h, w))
        coords = np.stack([z, np.broadcast_to(rows, z.shape), np.broadcast_to(cols, z.shape)])
        values = ndimage.map_coordinates(
            coefficients, coords, order=3, mode="nearest", prefilter=False, output=np.float32
        )
        yield Block(j, slice(0, h), slice(0, w), values)
