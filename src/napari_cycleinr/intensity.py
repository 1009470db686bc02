"""Intensity normalisation: the model sees CT and MRI on comparable [0, 1]-ish scales, and its answer goes
to the input's units and voxel type without ever wrapping, overflowing or leaving the input's range.

CT: Hounsfield units clipped to [-1024, 3071] and mapped linearly, (HU + 1024) / 4096, so one trained model
serves every scanner. MRI has no absolute scale: its 0.5 and 99.5 percentiles (of the finite values) map to 0
and 1; values far beyond them (MR_SPAN, e.g. one corrupt 1e30 voxel) are clipped so they cannot flood their
neighbourhood through the network. NaN voxels are read as the lowest intensity (air, background).

What was clipped is counted (`IntensityMap.clip_report`), for the pipeline to report.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from napari_cycleinr.errors import CycleINRError

CT_RANGE = (-1024.0, 3072.0)
MR_PERCENTILES = (0.5, 99.5)
MR_SPAN = (-2.0, 6.0)
"""Normalised MR values kept: 2 percentile ranges below the 0.5th and 5 above the 99.5th percentile hold every
real tissue; beyond that a value is an outlier (a corrupt voxel) that would destroy its neighbours' output."""
MODALITIES = ("CT", "MR")
_CHUNK_VOXELS = 2**24
"""Counting passes go slab by slab, so counting never allocates more than a few MB."""


@dataclass(frozen=True)
class IntensityMap:
    modality: str
    low: float
    high: float
    clip: bool
    floor: float | None = None
    """Outputs are never below this (the input's minimum): the model may undershoot at edges, to values (e.g.
    -1092 HU where the input stops at -1024) that do not exist on the input's scale."""
    ceiling: float | None = None
    """Outputs are never above this (CT: the input's maximum, usually the scanner's ceiling or metal). MR has
    none: its scale has no physical top, and a thin bright vessel may rightly come out brighter."""
    counts: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    """What was clipped so far (see clip_report)."""

    @property
    def input_range(self) -> tuple[float, float]:
        """The input values the model sees unchanged; those outside are clipped to it."""
        if self.clip:
            return self.low, self.high - 1.0
        span = self.high - self.low
        return self.low + MR_SPAN[0] * span, self.low + MR_SPAN[1] * span

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """The model's view of `values`: float32, outliers clipped to `input_range`, NaN read as `low`."""
        values = np.asarray(values)
        with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 -> +-inf, clipped next
            out = np.array(values, dtype=np.float32)
        np.clip(out, *self.input_range, out=out)
        if values.dtype.kind == "f":
            out[np.isnan(out)] = self.low
        return (out - np.float32(self.low)) / np.float32(self.high - self.low)

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        """Back to the input's units (float32), NaN and infinities removed, within [floor, ceiling]."""
        out = np.asarray(values, dtype=np.float32) * np.float32(self.high - self.low) + np.float32(self.low)
        low, high = self.output_range
        outside = np.count_nonzero(~((out >= low) & (out <= high)))  # NaN counts too
        if outside:
            self.counts["output_clamped"] = self.counts.get("output_clamped", 0) + int(outside)
            out = np.clip(np.nan_to_num(out, nan=low), low, high)
        return out

    @property
    def output_range(self) -> tuple[float, float]:
        """[floor, ceiling], each within float32's finite range when unset."""
        largest = float(np.finfo(np.float32).max)
        floor = -largest if self.floor is None else max(self.floor, -largest)
        ceiling = largest if self.ceiling is None else min(self.ceiling, largest)
        return floor, ceiling

    def clip_report(self) -> dict[str, int]:
        """Voxel counts: input values outside the model's range and non-finite ones (counted once, from the
        whole input), and output values clamped into [floor, ceiling] (counted per block, so the two passes
        of a self-ensemble count twice). Empty when nothing was clipped."""
        return {key: n for key, n in self.counts.items() if n}


def guess_modality(data: np.ndarray) -> str:
    """'CT' when values reach down to air in Hounsfield units (<= -500) and up to water (>= 0), else 'MR'."""
    if data.dtype.kind in "ub" or data.size == 0:
        return "MR"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN volume is simply not CT
        low, high = np.nanmin(data), np.nanmax(data)
    return "CT" if low <= -500 and high >= 0 else "MR"


def intensity_map(data: np.ndarray, modality: str | None = None, *, bounded: bool = False) -> IntensityMap:
    """The map for a volume: its modality's normalisation and the count of its voxels that normalisation
    clips. `bounded`: outputs stay within the input's own range (floor, ceiling); the torch finisher must
    then clamp with `output_bounds` too, or the fast and generic inference paths disagree."""
    modality = (modality or guess_modality(data)).upper()
    if modality == "MRI":
        modality = "MR"
    if modality not in MODALITIES:
        raise CycleINRError(f"unknown modality {modality!r}; choose CT or MR")
    smallest, largest = _finite_range(data) if bounded else (None, None)
    if modality == "CT":
        mapping = IntensityMap("CT", *CT_RANGE, clip=True, floor=smallest, ceiling=largest)
    else:
        sample = data[:: max(1, data.shape[0] // 32)]  # percentiles on a subset of slices: cheap and stable
        if sample.dtype.kind == "f":
            sample = sample[np.isfinite(sample)]
        low, high = (float(v) for v in np.percentile(sample, MR_PERCENTILES)) if sample.size else (0.0, 1.0)
        if not high > low:
            high = low + 1.0
        mapping = IntensityMap("MR", low, high, clip=False, floor=smallest)
    mapping.counts.update(_count_clipped_input(data, *mapping.input_range))
    return mapping


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the input's dtype: integers rounded and clipped to their range (never wrapped), floats clipped
    to their finite range (never inf), NaN as 0; bool by threshold."""
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    if dtype == np.bool_:
        return values >= 0.5
    work = values if values.dtype.kind == "f" else values.astype(np.float64)
    low, high = _representable_bounds(dtype, work.dtype)
    with np.errstate(invalid="ignore"):
        finite = np.clip(np.nan_to_num(work, nan=0.0, posinf=high, neginf=low), low, high)
    if dtype.kind in "iu":
        return np.rint(finite).astype(dtype)
    return finite.astype(dtype)


def output_bounds(
    intensities: IntensityMap, dtype: np.dtype, compute: np.dtype = np.float32
) -> tuple[float, float]:
    """(low, high) to clamp outputs computed in `compute` precision before casting to `dtype`: the map's
    [floor, ceiling] within what `dtype` holds, as `compute` numbers that cast without wrapping. For the
    torch finisher (model/output.py), which must clamp exactly as denormalise + cast_like do."""
    low, high = _representable_bounds(np.dtype(dtype), np.dtype(compute))
    floor, ceiling = intensities.output_range
    return max(low, floor), min(high, ceiling)


def _representable_bounds(dtype: np.dtype, compute: np.dtype) -> tuple[float, float]:
    """The widest [low, high] of `compute` floats that cast to `dtype` without wrapping or becoming inf:
    float32(2**31 - 1) is 2**31, which wraps to -2**31 as an int32, so the bound steps down to 2147483520."""
    compute = np.dtype(compute).type
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = compute(info.min), compute(info.max)
        while int(high) > info.max:
            high = np.nextafter(high, compute(-np.inf))
        while int(low) < info.min:
            low = np.nextafter(low, compute(np.inf))
        return float(low), float(high)
    largest = min(float(np.finfo(dtype).max), float(np.finfo(compute).max))
    return -largest, largest


def _finite_range(data: np.ndarray) -> tuple[float | None, float | None]:
    if data.size == 0:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN
        low, high = float(np.nanmin(data)), float(np.nanmax(data))
    if data.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
        finite = [chunk[np.isfinite(chunk)] for chunk in _chunks(data)]
        values = [(float(c.min()), float(c.max())) for c in finite if c.size]
        if not values:
            return None, None
        low, high = min(v[0] for v in values), max(v[1] for v in values)
    return low, high


def _count_clipped_input(data: np.ndarray, low: float, high: float) -> dict[str, int]:
    """Voxels normalisation clips: finite ones outside [low, high], and NaN or infinite ones."""
    outside = not_finite = 0
    for chunk in _chunks(data):
        finite = np.isfinite(chunk) if chunk.dtype.kind == "f" else True
        if chunk.dtype.kind == "f":  # integers are always finite (count_nonzero(True) would be 1, not size)
            not_finite += int(chunk.size - np.count_nonzero(finite))
        with np.errstate(over="ignore", invalid="ignore"):  # a bound beyond float16's range is simply inf
            outside += int(np.count_nonzero(((chunk < low) | (chunk > high)) & finite))
    return {"input_outside_range": outside, "input_not_finite": not_finite}


def _chunks(data: np.ndarray) -> Iterator[np.ndarray]:
    data = np.atleast_1d(data)
    step = max(1, _CHUNK_VOXELS // max(1, int(np.prod(data.shape[1:]))))
    for start in range(0, data.shape[0], step):
        yield np.asarray(data[start : start + step])
