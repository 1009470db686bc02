"""What each 2D image of a DICOM file says about itself, read from headers only (no pixel is decoded).

A classic file holds one image; an enhanced (multi-frame) CT or MR file holds many, each with its own
position in the per-frame functional groups. Both become `Frame`s, so grouping, sorting and geometry work
the same for either. Files that are not DICOM images (no 'DICM' mark, SR, RTSTRUCT, SEG, no pixel data)
are counted as skipped, never read as slices.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from napari_cycleinr.io import library_errors, unreadable

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SEG", "PR", "KO", "REG", "DOC", "RWV", "PLAN", "FID"}
)
"""Objects that are not a stack of grey-value slices: skipped wherever they are in the folder."""
MAX_FILES = 100_000
"""A folder with more files than this is not one scan: refuse before reading a million headers."""
DEFERRED_BYTES = 4096
"""Header reads leave values larger than this (the pixel data) on disk: presence is known, nothing loaded."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One 2D image: where it is (LPS mm), how its values become units, and which series part it is."""

    path: Path
    frame: int | None
    """Index in a multi-frame file, None for a classic single-image file."""
    series_uid: str
    sop_uid: str
    position: np.ndarray
    """ImagePositionPatient: centre of the first transmitted pixel, LPS mm."""
    orientation: np.ndarray
    """ImageOrientationPatient: row direction (along a row, towards higher columns), then column direction."""
    pixel_spacing: tuple[float, float]
    """(distance between rows, distance between columns) in mm, DICOM's order."""
    rows: int
    columns: int
    slope: float
    intercept: float
    thickness: float | None
    bits_allocated: int
    bits_stored: int
    signed: bool
    echo: str
    temporal: str
    instance: int | None
    localizer: bool
    transfer_syntax: str
    header: Dataset = field(repr=False)
    """The file's dataset (pixel data left on disk): series and study identity are read from it."""


@dataclass
class FolderScan:
    """Every image frame found, and what was skipped and why (reported, never silently read)."""

    frames: list[Frame] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts like a DICOM Part 10 file (128-byte preamble, then 'DICM'). Never raises."""
    try:
        with open(path, "rb") as file:
            return file.read(PREAMBLE_LENGTH + len(MAGIC))[PREAMBLE_LENGTH:] == MAGIC
    except OSError:
        return False


LOOK_DEPTH = 5
"""How many folder levels looks_like_dicom goes down: a CD or archive export nests its slices as
DICOM/PATIENT/STUDY/SERIES/IM0001 under the folder the user points at."""


def looks_like_dicom(path: str | os.PathLike[str], peek: int = 64) -> bool:
    """A DICOM file, or a folder with a DICOM file among the first `peek` files met going down level by level
    (itself first, at most LOOK_DEPTH levels and 4 x peek folders).

    Reads the first bytes of a few files only, never raises: what the napari reader and the command line
    ask before treating a folder as a series rather than a folder of scans.
    """
    from napari_cycleinr.io import is_supported

    path = Path(os.fspath(path))
    try:
        if path.is_file():
            return not is_supported(path) and is_dicom_file(path)
        if not path.is_dir():
            return False
        looked, level, folders_seen = 0, [path], 0
        for _ in range(LOOK_DEPTH + 1):
            below = []
            for folder in level:
                folders_seen += 1
                if folders_seen > 4 * peek:
                    return False
                entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
                for entry in entries:
                    if entry.is_dir() and not entry.is_symlink():
                        below.append(entry)
                    elif entry.is_file():
                        if is_dicom_file(entry):
                            return True
                        looked += 1
                        if looked >= peek:
                            return False
            level = below
    except OSError:
        return False
    return False


def candidate_files(folder: Path) -> list[Path]:
    """Files under `folder` (sub-folders too, as exports nest them), hidden files and DICOMDIR left out."""
    found: list[Path] = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            found.append(Path(root) / name)
            if len(found) > MAX_FILES:
                raise unreadable(
                    folder, f"it holds more than {MAX_FILES:,} files; give the folder of one scan"
                )
    return found


def scan_files(paths: Iterable[Path]) -> FolderScan:
    """Read the headers of `paths`: image frames are collected, everything else is counted as skipped.

    A file marked as DICOM that pydicom cannot parse is refused (a damaged slice would otherwise become a
    silently missing one).
    """
    scan = FolderScan()
    for path in paths:
        if not is_dicom_file(path):
            scan.skipped["not DICOM"] += 1
            continue
        with library_errors(path):
            try:
                dataset = pydicom.dcmread(path, defer_size=DEFERRED_BYTES)
            except InvalidDicomError as error:
                raise unreadable(path, f"it is not a valid DICOM file ({error})") from None
            reason = _not_an_image(dataset)
            if reason:
                scan.skipped[reason] += 1
                continue
            scan.frames.extend(frames_of(dataset, path))
    return scan


def _not_an_image(dataset: Dataset) -> str:
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"{modality} (not an image)"
    if "PixelData" not in dataset:
        kinds = ("FloatPixelData", "DoubleFloatPixelData")
        return (
            "floating-point pixel data (not supported)"
            if any(k in dataset for k in kinds)
            else "without pixels"
        )
    return ""


def frames_of(dataset: Dataset, path: Path) -> list[Frame]:
    """The frames of one image file; enhanced multi-frame files through their functional groups."""
    _check_pixel_format(dataset, path)
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in dataset or count > 1:
        return _enhanced_frames(dataset, path, count)
    return [_frame(dataset, path, None, dataset, dataset)]


def _check_pixel_format(dataset: Dataset, path: Path) -> None:
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        photometric = dataset.get("PhotometricInterpretation", "?")
        raise unreadable(
            path, f"it is a colour image ({photometric}, {samples} samples); give grey-value slices"
        )
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows < 1 or columns < 1:
        raise unreadable(path, f"its image size is {rows} x {columns} pixels")
    bits = int(dataset.get("BitsAllocated", 0) or 0)
    if bits not in (8, 16, 32):
        raise unreadable(path, f"{bits}-bit pixels are not supported (8, 16 or 32 bits)")


def _enhanced_frames(dataset: Dataset, path: Path, count: int) -> list[Frame]:
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence", []) or [])
    if len(per_frame) != count:
        raise unreadable(
            path,
            f"it holds {count} frames but positions for {len(per_frame)}: a multi-frame image needs the "
            "per-frame functional groups (enhanced CT/MR) to place its frames",
        )
    shared_groups = dataset.get("SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else Dataset()
    frames = []
    for index, groups in enumerate(per_frame):
        merged = Dataset()
        for source in (shared, groups):  # per-frame values win over shared ones
            for element in source:
                if element.VR == "SQ" and len(element.value) == 1:
                    for inner in element.value[0]:
                        merged[inner.tag] = inner
        echo = merged.get("EffectiveEchoTime", "")
        temporal = merged.get("TemporalPositionIndex", "")
        frames.append(_frame(dataset, path, index, merged, merged, echo=echo, temporal=temporal))
    return frames


def _frame(
    dataset: Dataset, path: Path, index: int | None, plane: Dataset, values: Dataset, **parts: Any
) -> Frame:
    """A Frame from the file's `dataset` with the plane and rescale attributes taken from `plane`/`values`."""
    position = _numbers(plane.get("ImagePositionPatient"), 3, "ImagePositionPatient", path)
    orientation = _numbers(plane.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path)
    spacing = _numbers(plane.get("PixelSpacing"), 2, "PixelSpacing", path)
    if not np.all(spacing > 0):
        raise unreadable(path, f"PixelSpacing must be positive, it is {list(spacing)}")
    row, column = orientation[:3], orientation[3:]
    if not (abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(column) - 1) < 1e-3):
        raise unreadable(path, "ImageOrientationPatient does not hold two unit vectors")
    if abs(float(row @ column)) > 1e-3:
        raise unreadable(path, "ImageOrientationPatient's row and column directions are not perpendicular")
    slope = _number(values.get("RescaleSlope"), 1.0)
    intercept = _number(values.get("RescaleIntercept"), 0.0)
    if slope == 0:
        raise unreadable(path, "RescaleSlope is 0")
    image_type = [str(v).upper() for v in (dataset.get("ImageType") or [])]
    echo = parts.get("echo", dataset.get("EchoNumbers", ""))
    temporal = parts.get("temporal", dataset.get("TemporalPositionIdentifier", ""))
    bits = int(dataset.BitsAllocated)
    return Frame(
        path=path,
        frame=index,
        series_uid=str(dataset.get("SeriesInstanceUID", "") or ""),
        sop_uid=str(dataset.get("SOPInstanceUID", "") or ""),
        position=position,
        orientation=orientation / np.repeat(np.linalg.norm(orientation.reshape(2, 3), axis=1), 3),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        rows=int(dataset.Rows),
        columns=int(dataset.Columns),
        slope=slope,
        intercept=intercept,
        thickness=_number(values.get("SliceThickness"), None),
        bits_allocated=bits,
        bits_stored=int(dataset.get("BitsStored", bits) or bits),
        signed=int(dataset.get("PixelRepresentation", 0) or 0) == 1,
        echo=_text(echo),
        temporal=_text(temporal),
        instance=_integer(dataset.get("InstanceNumber")),
        localizer="LOCALIZER" in image_type,
        transfer_syntax=str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or ""),
        header=dataset,
    )


def _numbers(value: Any, count: int, name: str, path: Path) -> np.ndarray:
    try:
        numbers = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        numbers = np.array([])
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise unreadable(path, f"it has no usable {name} (needs {count} numbers, found {value!r})")
    return numbers


def _number(value: Any, default: float | None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if np.isfinite(number) else default


def _integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split())
