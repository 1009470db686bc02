"""What a folder holds to super-resolve, scan by scan: NIfTI and TIFF files, and DICOM series.

A study arrives as a folder of DICOM series (often one sub-folder each, or all files in one folder): every
image stack in it (series, or echo / temporal position of one; io.dicom.series) is one scan, named after its
series number and description, so that the output folder says which is which and a second run finds what the
first one wrote. Headers are read once for the whole folder; pixels only when a scan's turn comes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from napari_cycleinr.io import file_suffix, is_supported
from napari_cycleinr.volume import Volume

SERIES_OUTPUT_SUFFIX = {"nifti": ".nii.gz", "tiff": ".tif", "dicom": ""}
"""What a DICOM series becomes in a folder run, by --format (default nifti; dicom: a new series, a folder)."""


@dataclass(frozen=True)
class InputScan:
    """One scan of the folder: where it is, what the log calls it, the output's name and how to read it."""

    source: Path
    """The file, or the folder the series was found in."""
    label: str
    output_name: str
    read: Callable[[str | None], Volume]
    """Reads the volume, given the through-plane axis (None: the default)."""


def holds_dicom(folder: Path) -> bool:
    from napari_cycleinr.io.dicom import looks_like_dicom

    return looks_like_dicom(folder)


def find_scans(folder: Path, output_format: str | None = None) -> tuple[list[InputScan], list[Path]]:
    """(scans, ignored files) in a folder: its NIfTI and TIFF files by name, then, if it holds DICOM, every
    image stack of its DICOM files (sub-folders too) in series order. Hidden files (our temporaries too) are
    left out. output_format 'dicom' names every output as a folder (a new DICOM series): the file's name
    without its suffix, the series' name; else a file keeps its name, a series' name takes
    SERIES_OUTPUT_SUFFIX."""
    from napari_cycleinr.io import read_volume

    as_series = output_format == "dicom"
    files, ignored = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if is_supported(path):
            output = path.name[: -len(file_suffix(path.name))] if as_series else path.name
            files.append(
                InputScan(path, path.name, output, lambda axis, path=path: read_volume(path, axis=axis))
            )
        else:
            ignored.append(path)
    if not holds_dicom(folder):
        return files, ignored
    from napari_cycleinr.io.dicom import is_dicom_file

    series = dicom_series(folder, SERIES_OUTPUT_SUFFIX[output_format or "nifti"])
    return files + series, [path for path in ignored if not is_dicom_file(path)]


def dicom_series(folder: Path, suffix: str) -> list[InputScan]:
    """Every image stack of the folder's DICOM files, each with a unique output name (+ suffix)."""
    from napari_cycleinr.io.dicom.read import read_stack as read
    from napari_cycleinr.io.dicom.read import scan_path
    from napari_cycleinr.io.dicom.series import group_series

    scan, where, _ = scan_path(folder)
    stacks = group_series(scan)
    names = [series_file_stem(stack.number, stack.description, stack.key) for stack in stacks]
    return [
        InputScan(
            where,
            stack.describe(),
            name + suffix,
            lambda axis, stack=stack: read(stack, where, axis, scan.skipped),
        )
        for stack, name in zip(stacks, _unique(names, [stack.key for stack in stacks]))
    ]


def series_file_stem(number: int | None, description: str, key: str) -> str:
    """'series_202_STD_BRAIN_1MM_iDose' (with '_echo_2' for a part): letters, digits, '-' and '_' only."""
    part = key.partition(":")[2]
    words = [str(number) if number is not None else "", _safe(description, 48), _safe(part, 64)]
    stem = "_".join(["series", *filter(None, words)])
    return stem if stem != "series" else f"series_{_safe(key, 64)}"


def _unique(names: list[str], keys: list[str]) -> list[str]:
    """Names shared by several stacks (same number and description) get their key, which is unique."""
    return [f"{name}_{_safe(key, 64)}" if names.count(name) > 1 else name for name, key in zip(names, keys)]


def _safe(text: str, length: int) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "_", text).strip("_")[:length]


def inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it (both resolved)."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
    except OSError:
        return False
