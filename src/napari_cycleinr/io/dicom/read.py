"""A DICOM stack as a canonical Volume: headers first, then one slice at a time into one array.

The array's size and value type are decided from the headers (rows, columns, bits, rescale) and checked
against free memory before anything is allocated; each file is then decoded and written into its place, so
memory stays at the volume plus one file. Values are in the modality's units: RescaleSlope/Intercept
applied (HU for CT); without those tags (common for MR) the stored values are kept as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.intensity import MODALITIES
from napari_cycleinr.io import (
    canonical_volume,
    check_fits_in_memory,
    is_supported,
    library_errors,
    unreadable,
)
from napari_cycleinr.io.dicom.frames import FolderScan, Frame, candidate_files, is_dicom_file, scan_files
from napari_cycleinr.io.dicom.geometry import StackGeometry, stack_geometry
from napari_cycleinr.io.dicom.series import SeriesInfo, group_series, select_series
from napari_cycleinr.volume import Volume

IDENTITY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID",
    "StudyID", "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "SeriesInstanceUID", "SeriesNumber",
    "SeriesDescription", "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName",
    "BodyPartExamined",
    "PatientPosition", "SpecificCharacterSet",
)  # fmt: skip
"""Header fields kept in metadata['dicom']: who and what the scan is, so a derived series can join it."""


def scan_path(path: str | os.PathLike[str]) -> tuple[FolderScan, Path, str | None]:
    """Headers of every file in the folder `path`, or in the folder of the file `path` (whose series UID is
    returned, so that series is the one read)."""
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise CycleINRError(f"no such file or folder: {path}")
    if path.is_dir():
        return scan_files(candidate_files(path)), path, None
    if not is_dicom_file(path):
        raise unreadable(path, "it is not a DICOM file (no 'DICM' after the 128-byte preamble)")
    with library_errors(path):
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID", "") or "")
    siblings = sorted(p for p in path.parent.iterdir() if p.is_file() and not p.name.startswith("."))
    return scan_files(siblings), path.parent, uid


def list_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Every image stack in a DICOM folder (or the folder of a DICOM file): UID, number, description,
    modality, slice count and the `key` that `read_dicom(..., series=key)` takes."""
    scan, _, _ = scan_path(path)
    return group_series(scan)


def read_dicom(
    path: str | os.PathLike[str], axis: str | None = None, series: str | int | None = None
) -> Volume:
    """The volume of one DICOM series: a folder holding one series, a file of a series (its whole series is
    read), or a folder of several with `series` naming one (number, SeriesInstanceUID or listed key)."""
    scan, folder, file_series = scan_path(path)
    stacks = group_series(scan)
    where = str(folder)
    if series is None and file_series is not None:
        stacks = [s for s in stacks if s.uid == file_series] or stacks
        where = f"the series of {Path(path).name} in {folder}"
    if not stacks:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(scan.skipped.items()) if n) or "no files"
        volumes = [p.name for p in candidate_files(folder) if is_supported(p)][:3]
        hint = f"; it holds {', '.join(volumes)}, ...: give one of those files" if volumes else ""
        raise CycleINRError(f"no DICOM image series in {where} (skipped: {skipped}){hint}")
    chosen = select_series(stacks, series, where)
    return read_stack(chosen, folder, axis, scan.skipped)


def read_all_series(
    path: str | os.PathLike[str], axis: str | None = None
) -> list[tuple[SeriesInfo, Volume | CycleINRError]]:
    """Every stack in the folder with its volume, or with the error that refused it (napari opens each)."""
    scan, folder, _ = scan_path(path)
    results: list[tuple[SeriesInfo, Volume | CycleINRError]] = []
    for stack in group_series(scan):
        try:
            results.append((stack, read_stack(stack, folder, axis, scan.skipped)))
        except CycleINRError as error:
            results.append((stack, error))
    return results


def read_stack(stack: SeriesInfo, folder: Path, axis: str | None, skipped: Any = None) -> Volume:
    """Geometry, then pixels, of one stack, as a canonical Volume with its DICOM metadata."""
    name = f"{folder}: {stack.describe()}"
    geometry = stack_geometry(stack.frames, name)
    frames = geometry.frames
    _check_decodable(frames, name)
    shape = (len(frames), *geometry.size)
    dtype = value_type(frames)
    check_fits_in_memory(shape, dtype.itemsize, folder)
    array = np.empty(shape, dtype=dtype)
    if geometry.shifts is None:
        _fill(array, frames)
    else:  # each tilted slice shifted within its plane onto the grid along the normal; around it, nothing
        _fill(array, frames, geometry.shifts, _outside_value(frames[0], stack.modality, dtype))
    metadata = _metadata(stack, geometry, folder, skipped)
    # The stack is the through-plane axis unless told otherwise: a DICOM series is a stack of its slices,
    # even when super-resolution made them thinner than the pixels.
    volume = canonical_volume(array, geometry.affine, "zyx", axis or "z", metadata)
    modality = stack.modality if stack.modality in MODALITIES else volume.metadata["modality"]
    return volume.replace(metadata={**volume.metadata, "modality": modality})


def value_type(frames: tuple[Frame, ...]) -> np.dtype:
    """The smallest type holding every value the headers allow: the stored type when there is no rescale,
    int16/int32 for integer rescales that fit (CT HU), float32 otherwise."""
    lows, highs, integer, identity = [], [], True, True
    stored = {(f.bits_allocated, f.signed) for f in frames}
    for f in frames:
        bits = min(f.bits_stored, f.bits_allocated)
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if f.signed else (0, 2**bits - 1)
        ends = (low * f.slope + f.intercept, high * f.slope + f.intercept)
        lows.append(min(ends))
        highs.append(max(ends))
        integer &= float(f.slope).is_integer() and float(f.intercept).is_integer()
        identity &= f.slope == 1 and f.intercept == 0
    if identity and len(stored) == 1:
        bits, signed = stored.pop()
        return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    if integer:
        for candidate in (np.int16, np.int32):
            info = np.iinfo(candidate)
            if min(lows) >= info.min and max(highs) <= info.max:
                return np.dtype(candidate)
    return np.dtype(np.float32)


def _check_decodable(frames: tuple[Frame, ...], name: str) -> None:
    """Refuse compressed pixel data no installed decoder can read, before any is read."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    for syntax in sorted({f.transfer_syntax for f in frames}):
        uid = UID(syntax or "1.2.840.10008.1.2")
        if not uid.is_compressed:
            continue
        try:
            available = get_decoder(uid).is_available
        except (NotImplementedError, ValueError):
            available = False
        if not available:
            raise CycleINRError(
                f"{name}: its pixels are compressed as {uid.name} ({uid}), which needs a decoder that is not "
                "installed: pip install python-gdcm (JPEG Lossless, JPEG-LS), or convert the series to "
                "uncompressed DICOM first (e.g. gdcmconv --raw)"
            )


def _fill(
    array: np.ndarray,
    frames: tuple[Frame, ...],
    shifts: tuple[tuple[float, float], ...] | None = None,
    outside: float = 0.0,
) -> None:
    """Decode each file once and put its frames (rescaled) into their slots of `array`, each at its shift
    (rows, columns) where a tilt moves it (a sub-pixel shift interpolates linearly within the slice; where
    no pixel lands, `outside`)."""
    slots: dict[Path, list[tuple[int, Frame]]] = {}
    for index, frame in enumerate(frames):
        slots.setdefault(frame.path, []).append((index, frame))
    for path, members in slots.items():
        with library_errors(path):
            dataset = pydicom.dcmread(path)
            pixels = dataset.pixel_array
        multi = members[0][1].frame is not None
        expected = (int(dataset.get("NumberOfFrames", 1) or 1),) if multi else ()
        expected += (members[0][1].rows, members[0][1].columns)
        if pixels.shape != expected:
            raise unreadable(path, f"its pixel data has shape {pixels.shape}, the header says {expected}")
        for index, frame in members:
            values = pixels[frame.frame] if multi else pixels
            if shifts is None and frame.slope == 1 and frame.intercept == 0:
                array[index] = values
                continue
            scaled = values.astype(np.float64) * frame.slope + frame.intercept
            if shifts is not None:
                scaled = _shifted(scaled, shifts[index], array.shape[1:], outside)
            array[index] = np.rint(scaled) if array.dtype.kind in "iu" else scaled
        del pixels, dataset


def _shifted(
    values: np.ndarray, shift: tuple[float, float], size: tuple[int, ...], outside: float
) -> np.ndarray:
    """`values` moved by `shift` pixels on a plane of `size`, `outside` where no pixel lands."""
    from scipy import ndimage

    canvas = np.full(size, outside)
    canvas[: values.shape[0], : values.shape[1]] = values
    return ndimage.shift(canvas, shift, order=1, mode="constant", cval=outside, prefilter=False)


def _outside_value(frame: Frame, modality: str, dtype: np.dtype) -> float:
    """What the grid holds where a tilted slice does not reach: the series' PixelPaddingValue, else air for
    CT (-1024 HU), else 0, within the value type."""
    padding = frame.header.get("PixelPaddingValue")
    if isinstance(padding, int | float) and not isinstance(padding, bool):
        value = float(padding) * frame.slope + frame.intercept
    else:
        value = -1024.0 if modality == "CT" else 0.0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        value = min(max(value, info.min), info.max)
    return value


def _metadata(stack: SeriesInfo, geometry: StackGeometry, folder: Path, skipped: Any) -> dict[str, Any]:
    header = geometry.frames[0].header
    identity = {
        key: _plain(header.get(key)) for key in IDENTITY_KEYWORDS if header.get(key) not in (None, "")
    }
    identity.update(
        {
            "transfer_syntaxes": sorted({f.transfer_syntax for f in geometry.frames}),
            "files": len({f.path for f in geometry.frames}),
            "series_key": stack.key,
            "part": stack.part,
            "first_instance": geometry.frames[0].instance,
            "skipped_files": {reason: n for reason, n in (skipped or {}).items() if n},
            "duplicate_copies_ignored": geometry.dropped_copies,
            "slice_thicknesses_mm": list(geometry.thicknesses),
        }
    )
    if geometry.shifts is not None:
        identity["gantry_tilt_corrected_degrees"] = round(geometry.tilt_degrees, 3)
    window = header.get("WindowCenter"), header.get("WindowWidth")
    if all(w is not None for w in window):
        identity["window"] = [_first_number(w) for w in window]
    return {
        "source_path": str(folder.resolve()),
        "format": "dicom",
        "slice_thickness_mm": geometry.slice_thickness,
        "slice_spacing_mm": geometry.slice_spacing,
        "dicom": identity,
    }


def _plain(value: Any) -> Any:
    """A header value as plain Python (str, int, float): metadata must survive copying and JSON."""
    if isinstance(value, pydicom.multival.MultiValue):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _first_number(value: Any) -> float | None:
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
