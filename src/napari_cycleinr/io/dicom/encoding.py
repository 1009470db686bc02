"""Voxel values as 16-bit DICOM pixels and a rescale that gives them back.

CT and MR images store 16-bit integers; RescaleSlope and RescaleIntercept turn them into units. Integer
volumes whose range spans at most 65536 values come back exactly (slope 1; intercept 0 whenever the values
fit int16 or uint16). Other values use the finest slope that spans their range, so each comes back within
half a slope (about 0.03 HU for a CT from -1024 to 3071).
"""

from __future__ import annotations

import numpy as np
from pydicom.valuerep import format_number_as_ds

from napari_cycleinr.errors import CycleINRError

INT16 = np.iinfo(np.int16)
UINT16 = np.iinfo(np.uint16)
STEPS = int(UINT16.max)


def encode_values(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(stored int16/uint16 array, slope, intercept) with stored * slope + intercept == data (see above)."""
    data = np.asarray(data)
    if data.dtype.kind not in "biuf":
        raise CycleINRError(f"voxels of type {data.dtype} cannot be written as DICOM; give grey values")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise CycleINRError("the volume holds NaN or infinite values, which DICOM pixels cannot store")
    if data.size == 0:
        raise CycleINRError("the volume has no voxels")
    low, high = float(data.min()), float(data.max())
    integer = data.dtype.kind in "biu" or bool(np.all(np.equal(np.mod(data, 1), 0)))
    if integer and INT16.min <= low and high <= INT16.max:
        return data.astype(np.int16), 1.0, 0.0
    if integer and UINT16.min <= low and high <= UINT16.max:
        return data.astype(np.uint16), 1.0, 0.0
    if integer and high - low <= STEPS:
        intercept = low - INT16.min  # an integer: values - intercept fill int16 from its bottom
        return (data.astype(np.float64) - intercept).astype(np.int16), 1.0, intercept
    slope = _as_stored((high - low) / STEPS if high > low else 1.0)
    intercept = _as_stored(low - INT16.min * slope)
    stored = np.rint((data.astype(np.float64) - intercept) / slope)
    return np.clip(stored, INT16.min, INT16.max).astype(np.int16), slope, intercept


def _as_stored(value: float) -> float:
    """The number as DICOM's 16-character decimal string will hold it, so the encoding uses what is read."""
    return float(format_number_as_ds(float(value)))
