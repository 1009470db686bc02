"""Intensity normalisation: the model sees CT and MRI on comparable [0, 1]-ish scales.

CT: Hounsfield units clipped to [-1024, 3071] and mapped linearly, (HU + 1024) / 4096, so one trained model
serves every scanner. MRI has no absolute scale: its 0.5 and 99.5 percentiles map to 0 and 1 (not clipped).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from napari_cycleinr.errors import CycleINRError

CT_RANGE = (-1024.0, 3072.0)
MR_PERCENTILES = (0.5, 99.5)
MODALITIES = ("CT", "MR")


@dataclass(frozen=True)
class IntensityMap:
    modality: str
    low: float
    high: float
    clip: bool

    def normalise(self, values: np.ndarray) -> np.ndarray:
        out = np.asarray(values, dtype=np.float32)
        if self.clip:
            out = np.clip(out, self.low, self.high - 1.0)
        return (out - np.float32(self.low)) / np.float32(self.high - self.low)

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32) * np.float32(self.high - self.low) + np.float32(self.low)


def guess_modality(data: np.ndarray) -> str:
    """'CT' when values reach down to air in Hounsfield units (<= -500) and up to water (>= 0), else 'MR'."""
    if data.dtype.kind in "ub" or data.size == 0:
        return "MR"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN volume is simply not CT
        low, high = np.nanmin(data), np.nanmax(data)
    return "CT" if low <= -500 and high >= 0 else "MR"


def intensity_map(data: np.ndarray, modality: str | None = None) -> IntensityMap:
    modality = (modality or guess_modality(data)).upper()
    if modality == "MRI":
        modality = "MR"
    if modality not in MODALITIES:
        raise CycleINRError(f"unknown modality {modality!r}; choose CT or MR")
    if modality == "CT":
        return IntensityMap("CT", *CT_RANGE, clip=True)
    sample = data[:: max(1, data.shape[0] // 32)]  # percentiles on a subset of slices: cheap and stable
    low, high = (float(v) for v in np.percentile(sample, MR_PERCENTILES))
    if not high > low:
        high = low + 1.0
    return IntensityMap("MR", low, high, clip=False)


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the input's dtype: integers rounded and clipped to their range, floats cast."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    if dtype == np.bool_:
        return values >= 0.5
    return values.astype(dtype)
