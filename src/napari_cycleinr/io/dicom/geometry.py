"""Where the slices of one DICOM stack are, from ImagePositionPatient and ImageOrientationPatient only.

Slices are sorted along the slice normal (row x column direction), never by file name or InstanceNumber.
The stack is accepted only when it is a regular grid: one orientation and pixel size, no two slices at one
position, slice centres on a line along the normal (no gantry tilt) and evenly spaced (no missing slice).
Anything else is refused with a message saying what was found, because stacking it as a regular volume
would put voxels in the wrong place without a word.

DICOM is LPS (x to the patient's left, y to the back); volumes here are RAS, so x and y change sign.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io.dicom.frames import Frame

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SAME_DIRECTION = 1e-4
"""Direction cosines that differ by less than this count as the same orientation."""
SAME_SPACING = 1e-4
"""Relative difference under which two PixelSpacings are the same."""
POSITION_TOLERANCE_MM = 0.01
"""Absolute part of how far a slice centre may sit off the regular grid (DICOM stores positions rounded)."""
RELATIVE_TOLERANCE = 2e-4
"""Part of the distance from the first slice added to that tolerance (0.011 degrees of tilt)."""
SPACING_TOLERANCE = 0.01
"""How far (as a fraction of the mean spacing) a slice centre may be from where an even grid puts it."""


@dataclass(frozen=True)
class StackGeometry:
    frames: tuple[Frame, ...]
    """The slices in order along the slice normal."""
    affine: np.ndarray
    """4x4: index (slice, row, column, 1) -> RAS mm."""
    slice_spacing: float | None
    """Distance between neighbouring slice centres along the normal (None for a single slice)."""
    slice_thickness: float | None
    """SliceThickness when all slices agree, else None (the values are in `thicknesses`)."""
    thicknesses: tuple[float, ...]
    dropped_copies: int
    """Files that were the same SOP instance as another (a copied file), read once."""


def stack_geometry(frames: tuple[Frame, ...] | list[Frame], name: str) -> StackGeometry:
    """The regular grid the frames of one stack form, or a CycleINRError saying why they do not."""
    first = frames[0]
    _check_same_grid(frames, name)
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    along = np.array([f.position @ normal for f in frames])
    order = np.lexsort((np.array([f.instance if f.instance is not None else 0 for f in frames]), along))
    ordered = [frames[i] for i in order]
    along = along[order]
    ordered, along, copies = _without_copies(ordered, along, name)
    spacing = _check_on_a_line(ordered, along, normal, name)
    thicknesses = tuple(sorted({round(f.thickness, 6) for f in ordered if f.thickness is not None}))
    thickness = thicknesses[0] if len(thicknesses) == 1 else None
    step = spacing if spacing is not None else (thickness or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = normal * step
    lps[:3, 1] = column * first.pixel_spacing[0]  # next row: one row spacing along the column direction
    lps[:3, 2] = row * first.pixel_spacing[1]
    lps[:3, 3] = ordered[0].position
    return StackGeometry(tuple(ordered), LPS_TO_RAS @ lps, spacing, thickness, thicknesses, copies)


def _check_same_grid(frames: tuple[Frame, ...] | list[Frame], name: str) -> None:
    first = frames[0]
    for frame in frames[1:]:
        if (frame.rows, frame.columns) != (first.rows, first.columns):
            raise CycleINRError(
                f"{name}: slices have different sizes ({first.rows}x{first.columns} in {_where(first)}, "
                f"{frame.rows}x{frame.columns} in {_where(frame)}); they are not one volume"
            )
        if not np.allclose(frame.pixel_spacing, first.pixel_spacing, rtol=SAME_SPACING, atol=0):
            raise CycleINRError(
                f"{name}: slices have different pixel spacings ({_mm(first.pixel_spacing)} in "
                f"{_where(first)}, "
                f"{_mm(frame.pixel_spacing)} in {_where(frame)}); they are not one volume"
            )
        if np.max(np.abs(frame.orientation - first.orientation)) > SAME_DIRECTION:
            raise CycleINRError(
                f"{name}: slices are turned against each other within their plane ({_where(first)} and "
                f"{_where(frame)} differ in ImageOrientationPatient); they are not one volume"
            )


def _without_copies(frames: list[Frame], along: np.ndarray, name: str) -> tuple[list[Frame], np.ndarray, int]:
    """Drop repeated copies of one SOP instance; refuse two different images at one position."""
    keep = [0]
    copies = 0
    for i in range(1, len(frames)):
        previous = frames[keep[-1]]
        if abs(along[i] - along[keep[-1]]) > POSITION_TOLERANCE_MM:
            keep.append(i)
        elif (
            frames[i].sop_uid and frames[i].sop_uid == previous.sop_uid and frames[i].frame == previous.frame
        ):
            copies += 1
        else:
            raise CycleINRError(
                f"{name}: two different images lie at the same position ({along[i]:.2f} mm along the slice "
                f"normal: {_where(previous)} and {_where(frames[i])}); the series holds more than one volume "
                "(repeated acquisitions?); keep one set of slices in the folder"
            )
    return [frames[i] for i in keep], along[keep], copies


def _check_on_a_line(frames: list[Frame], along: np.ndarray, normal: np.ndarray, name: str) -> float | None:
    """The even spacing between slice centres; refuses tilted (sheared) and unevenly spaced stacks."""
    if len(frames) < 2:
        return None
    positions = np.array([f.position for f in frames])
    distance = along - along[0]
    off_line = positions - positions[0] - np.outer(distance, normal)
    drift = np.linalg.norm(off_line, axis=1)
    uneven = _uneven_spacing(along)
    if np.any(drift > POSITION_TOLERANCE_MM + RELATIVE_TOLERANCE * np.abs(distance)):
        tilt = float(np.degrees(np.arctan2(drift[-1], distance[-1])))
        stated = frames[0].header.get("GantryDetectorTilt")
        said = f": GantryDetectorTilt says {float(stated):g} degrees" if _is_number(stated) else ""
        also = f"; the spacing is also uneven ({uneven})" if uneven else ""
        raise CycleINRError(
            f"{name}: the slices are tilted {tilt:.1f} degrees against the line their centres lie on (gantry "
            f"tilt{said}){also}; stacking them as a regular volume would shear the anatomy by up to "
            f"{drift.max():.0f} mm. Reconstruct the series without tilt, or resample it onto an untilted "
            "grid first (e.g. dcm2niix corrects gantry tilt)"
        )
    if uneven:
        raise CycleINRError(
            f"{name}: the slices are not evenly spaced ({uneven}); a missing slice or mixed slice spacings "
            "cannot be stacked as a regular volume. Give a series with evenly spaced slices (all slices, "
            "one reconstruction)"
        )
    return float(distance[-1] / (len(frames) - 1))


def _uneven_spacing(along: np.ndarray) -> str:
    """'' for even spacing, else the runs of equal spacing: '4.00 mm for slices 1-14, 1.08 mm ...'."""
    if len(along) < 3:
        return ""
    mean = (along[-1] - along[0]) / (len(along) - 1)
    grid = along[0] + mean * np.arange(len(along))
    if np.max(np.abs(along - grid)) <= POSITION_TOLERANCE_MM + SPACING_TOLERANCE * mean:
        return ""
    steps = np.diff(along)
    runs: list[tuple[float, int, int]] = []  # (spacing, first slice, last slice), 1-based along the normal
    for i, step in enumerate(steps):
        if runs and abs(step - runs[-1][0]) <= POSITION_TOLERANCE_MM + SPACING_TOLERANCE * mean:
            runs[-1] = (runs[-1][0], runs[-1][1], i + 2)
        else:
            runs.append((float(step), i + 1, i + 2))
    shown = [f"{s:.2f} mm between slices {a}-{b}" for s, a, b in runs[:6]]
    more = f" and {len(runs) - 6} more changes" if len(runs) > 6 else ""
    return ", ".join(shown) + more + " along the slice normal"


def _is_number(value: object) -> bool:
    try:
        return np.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _where(frame: Frame) -> str:
    return frame.path.name + (f" frame {frame.frame + 1}" if frame.frame is not None else "")


def _mm(values: tuple[float, ...]) -> str:
    return " x ".join(f"{v:g}" for v in values) + " mm"
