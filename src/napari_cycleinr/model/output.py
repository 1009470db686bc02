"""The output's intensities and type: the input normalised on demand, and the normalised answer mapped back
to the input's units and voxel type (on the device, where torch can hold that type)."""

from __future__ import annotations

import numpy as np
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.intensity import IntensityMap, cast_like, output_bounds
from napari_cycleinr.runtime.devices import Finish


class Normalised:
    """A volume's normalised intensities, computed slab by slab when indexed."""

    def __init__(self, data: np.ndarray, intensities: IntensityMap) -> None:
        self.data, self.intensities, self.shape = data, intensities, data.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return self.intensities.normalise(self.data[key])

    def reversed_z(self) -> Normalised:
        return Normalised(self.data[::-1], self.intensities)


def output_finisher(intensities: IntensityMap, dtype: np.dtype) -> Finish | None:
    """Denormalise, clamp and round in torch, on the device, exactly as denormalise + cast_like do in numpy
    (within the map's [floor, ceiling] and what the type holds, NaN as the floor; clamped voxels counted in
    the map's clip report); None for output types torch cannot hold."""
    dtype = np.dtype(dtype)
    torch_types = {
        np.dtype(np.int8): torch.int8,
        np.dtype(np.uint8): torch.uint8,
        np.dtype(np.int16): torch.int16,
        np.dtype(np.int32): torch.int32,
        np.dtype(np.float32): torch.float32,
        np.dtype(np.float64): torch.float64,
    }
    if dtype not in torch_types:
        return None
    scale, offset = float(np.float32(intensities.high - intensities.low)), float(np.float32(intensities.low))
    low, high = output_bounds(intensities, dtype)
    floor, ceiling = intensities.output_range
    counts = intensities.counts

    def finish(values: torch.Tensor) -> torch.Tensor:
        out = values.float() * scale + offset
        outside = int((~((out >= floor) & (out <= ceiling))).sum())  # as denormalise counts (NaN too)
        if outside:
            counts["output_clamped"] = counts.get("output_clamped", 0) + outside
        out.nan_to_num_(nan=low).clamp_(low, high)
        if dtype.kind in "iu":
            out.round_()
        return out.to(torch_types[dtype])

    return finish


def allocate_output(shape: tuple[int, ...], dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """The output array: `out` (preallocated or memory-mapped) after checking its shape, else a new one."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != shape:
        raise CycleINRError(f"the output array has shape {out.shape}, expected {shape}")
    return out


def write_block(out: np.ndarray, where: tuple, values: np.ndarray, intensities: IntensityMap, how: str) -> None:
    """Store a block's values in the output's units and type. how: 'finished' (already in them, see
    output_finisher), 'normalised' (map back and cast), or 'mean' (the second pass of the z self-ensemble:
    averaged, in the output's units, with what the first pass wrote)."""
    if how == "mean":
        values = cast_like((out[where] + intensities.denormalise(values)) / 2, out.dtype)
    elif how == "normalised":
        values = cast_like(intensities.denormalise(values), out.dtype)
    out[where] = values
