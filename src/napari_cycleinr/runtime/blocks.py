"""What every method yields while it works: one block of output slices over one in-plane tile.

Methods are generators of blocks, so the caller owns the output array (in memory or memory-mapped), the
progress bar and the cancel check, and peak memory stays that of one block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from napari_cycleinr.errors import Cancelled


@dataclass(frozen=True)
class Block:
    out_slices: slice
    rows: slice
    cols: slice
    values: np.ndarray
    """Normalised intensities, float32, shape (len(out_slices), len(rows), len(cols))."""


CancelCheck = Callable[[], bool]


def raise_if_cancelled(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled")


def owner_ranges(positions: np.ndarray, n_in: int, slab: int) -> list[tuple[int, int, int, int]]:
    """Split output slices by the input slab that holds their lower neighbour: (in_start, in_stop, j0, j1).

    Positions must be sorted; each output slice goes to exactly one slab.
    """
    owner = np.clip(np.floor(positions), 0, n_in - 1)
    ranges = []
    for start in range(0, n_in, slab):
        stop = min(n_in, start + slab)
        j0, j1 = np.searchsorted(owner, [start, stop], side="left")
        if j1 > j0:
            ranges.append((start, stop, int(j0), int(j1)))
    return ranges
