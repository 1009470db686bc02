"""Where the slices of one DICOM stack are, from ImagePositionPatient and ImageOrientationPatient only.

Slices are sorted along the slice normal (row x column direction), never by file name or InstanceNumber.
The stack is accepted when it is a regular grid: one orientation and pixel size, no two slices at one
position, evenly spaced along the normal (no missing slice), and slice centres on a line along the normal,
or on a straight line tilted against it (gantry tilt). A tilted stack is read exactly, without interpolating
between slices: the slices stay the planes the scanner measured, each shifted within its own plane to where
it lies on a grid along the normal (the grid grows by the shift; `shifts`). Anything else is refused with a
message saying what was found, because stacking it as a regular volume would put voxels in the wrong place
without a word.

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
MAX_TILT_DEGREES = 45.0
"""Gantries tilt up to about 30 degrees; centres further off the normal are a broken header, not a tilt."""
MIN_RUN_SLICES = 3
"""A series of runs of different spacing (a head CT's 4 mm then 7 mm slices) is split into one stack per run
when every run has this many slices; a lone slice off the grid (a missing one) stays a refusal."""
MAX_RUNS = 4
MAX_GROWTH = 2.0
"""A tilt may widen the grid by at most this many times its rows (columns): no hostile header allocates
more."""


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
    size: tuple[int, int]
    """(rows, columns) of the grid: the slices' own, or more where a tilt shifts them."""
    shifts: tuple[tuple[float, float], ...] | None = None
    """Per slice, where its first pixel lands in the grid (rows, columns); None for an untilted stack."""
    tilt_degrees: float = 0.0
    """Angle between the line of slice centres and the slice normal (gantry tilt), corrected by `shifts`."""


def slice_normal(frame: Frame) -> np.ndarray:
    """The unit normal of a frame's plane: row x column direction."""
    normal = np.cross(frame.orientation[:3], frame.orientation[3:])
    return normal / np.linalg.norm(normal)


def stack_geometry(frames: tuple[Frame, ...] | list[Frame], name: str) -> StackGeometry:
    """The regular grid the frames of one stack form, or a CycleINRError saying why they do not."""
    first = frames[0]
    _check_same_grid(frames, name)
    row, column = first.orientation[:3], first.orientation[3:]
    normal = slice_normal(first)
    along = np.array([f.position @ normal for f in frames])
    order = np.lexsort((np.array([f.instance if f.instance is not None else 0 for f in frames]), along))
    ordered = [frames[i] for i in order]
    along = along[order]
    ordered, along, copies = _without_copies(ordered, along, name)
    shifts, tilt = _tilt_shifts(ordered, along, normal, name)
    spacing = _even_spacing(along, name)
    thicknesses = tuple(sorted({round(f.thickness, 6) for f in ordered if f.thickness is not None}))
    thickness = thicknesses[0] if len(thicknesses) == 1 else None
    step = spacing if spacing is not None else (thickness or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = normal * step
    lps[:3, 1] = column * first.pixel_spacing[0]  # next row: one row spacing along the column direction
    lps[:3, 2] = row * first.pixel_spacing[1]
    lps[:3, 3] = ordered[0].position
    size = (first.rows, first.columns)
    if shifts is not None:  # the grid starts where the most shifted slice starts and holds every slice
        low = shifts.min(axis=0)
        lps[:3, 3] = ordered[0].position + low[0] * lps[:3, 1] + low[1] * lps[:3, 2]
        shifts = shifts - low
        grow = np.ceil(shifts.max(axis=0) - 1e-6).astype(int)
        size = (first.rows + int(grow[0]), first.columns + int(grow[1]))
        shifts = tuple((float(r), float(c)) for r, c in shifts)
    return StackGeometry(
        tuple(ordered), LPS_TO_RAS @ lps, spacing, thickness, thicknesses, copies, size, shifts, tilt
    )


def even_runs(frames: list[Frame]) -> list[list[Frame]]:
    """The frames split into runs of one slice spacing along the normal, where a series has up to MAX_RUNS
    such runs of MIN_RUN_SLICES slices or more; else all of them as one run (stack_geometry judges it)."""
    if len(frames) < 2 * MIN_RUN_SLICES:
        return [frames]
    normal = slice_normal(frames[0])
    ordered = sorted(frames, key=lambda f: float(f.position @ normal))
    along = np.array([f.position @ normal for f in ordered])
    if not _uneven_spacing(along):
        return [frames]
    mean = (along[-1] - along[0]) / (len(along) - 1)
    same = POSITION_TOLERANCE_MM + SPACING_TOLERANCE * mean
    runs: list[list[int]] = [[0]]
    for i in range(1, len(along)):
        run = runs[-1]
        if len(run) == 1 or abs(along[i] - along[i - 1] - (along[run[1]] - along[run[0]])) <= same:
            run.append(i)
        else:
            runs.append([i])
    if len(runs) > MAX_RUNS or min(len(run) for run in runs) < MIN_RUN_SLICES:
        return [frames]
    return [[ordered[i] for i in run] for run in runs]


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


def _tilt_shifts(
    frames: list[Frame], along: np.ndarray, normal: np.ndarray, name: str
) -> tuple[np.ndarray | None, float]:
    """(per-slice shift in pixels (rows, columns), tilt in degrees) of a tilted stack, (None, 0) of an
    untilted one. Refuses centres that do not lie on one straight line (not a tilt: slices out of place)."""
    if len(frames) < 2:
        return None, 0.0
    positions = np.array([f.position for f in frames])
    distance = along - along[0]
    off_line = positions - positions[0] - np.outer(distance, normal)  # within the slice plane
    tolerance = POSITION_TOLERANCE_MM + RELATIVE_TOLERANCE * np.abs(distance)
    if np.all(np.linalg.norm(off_line, axis=1) <= tolerance):
        return None, 0.0
    per_mm = off_line.T @ distance / float(distance @ distance)  # in-plane drift per mm along the normal
    wander = np.linalg.norm(off_line - np.outer(distance, per_mm), axis=1)
    tilt = float(np.degrees(np.arctan(np.linalg.norm(per_mm))))
    stated = frames[0].header.get("GantryDetectorTilt")
    said = f"; GantryDetectorTilt says {float(stated):g} degrees" if _is_number(stated) else ""
    if np.any(wander > tolerance + SPACING_TOLERANCE * np.abs(distance)) or tilt > MAX_TILT_DEGREES:
        how = (
            f"{wander.max():.1f} mm off the straight line through the others"
            if tilt <= MAX_TILT_DEGREES
            else f"{tilt:.0f} degrees off the slice normal, more than any gantry tilts"
        )
        raise CycleINRError(
            f"{name}: the slice centres do not lie on one line (up to {how}{said}); stacking them as a "
            "regular volume would put the anatomy in the wrong place. Give one series of parallel, evenly "
            "placed slices"
        )
    row, column = frames[0].orientation[:3], frames[0].orientation[3:]
    spacing = frames[0].pixel_spacing
    shifts = np.stack([off_line @ column / spacing[0], off_line @ row / spacing[1]], axis=1)
    growth = np.ptp(shifts, axis=0) / np.array([frames[0].rows, frames[0].columns])
    if np.any(growth > MAX_GROWTH):
        raise CycleINRError(
            f"{name}: the slices are tilted {tilt:.1f} degrees{said}, which shifts them by "
            f"{growth.max():.1f} times their own size across the stack; that is no scan, the headers are "
            "wrong"
        )
    return shifts, tilt


def _even_spacing(along: np.ndarray, name: str) -> float | None:
    """The even spacing between slice centres along the normal; refuses uneven ones."""
    if len(along) < 2:
        return None
    uneven = _uneven_spacing(along)
    if uneven:
        raise CycleINRError(
            f"{name}: the slices are not evenly spaced ({uneven}); a missing slice or mixed slice spacings "
            "cannot be stacked as a regular volume. Give a series with evenly spaced slices (all slices, "
            "one reconstruction)"
        )
    return float((along[-1] - along[0]) / (len(along) - 1))


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
