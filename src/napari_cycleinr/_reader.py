"""napari reader for NIfTI (.nii, .nii.gz) and TIFF (.tif, .tiff) volumes and DICOM series.

`napari_get_reader` only looks at the path (never opens the file, never raises) and returns None for anything
else, so napari can offer other readers. The reader itself reads through `napari_cycleinr.io` and builds the
layer through `_layers`, like every other part of the plugin; a damaged file raises a CycleINRError that
napari shows as a one-line notification. A DICOM folder (or a file of a series) opens one layer per series;
a series that cannot be stacked as a regular volume is named in a warning while the others open.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_cycleinr._layers import volume_to_layer_data, widen_contrast_range_when_added
from napari_cycleinr.errors import CycleINRError

PathOrPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
LayerDataTuple = tuple[Any, dict[str, Any], str]
DICOM_PEEK = 64
"""How many files of a folder are looked at (first bytes only) to decide whether it holds DICOM."""


def napari_get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerDataTuple]] | None:
    """`read_files` when every path is an existing file with a supported suffix, a DICOM file or a folder
    holding DICOM files, else None (a folder of anything else is left to other readers)."""
    try:
        paths = _as_paths(path)
        given = path if isinstance(path, list | tuple) else [path]
        if not paths or any(isinstance(p, str) and not p.strip() for p in given):  # '' is not the cwd
            return None
        from napari_cycleinr.io import is_supported

        if all((is_supported(p) and p.is_file()) or is_dicom_path(p) for p in paths):
            return read_files
    except Exception:  # an odd path object or an unreadable folder: not ours
        return None
    return None


def read_files(path: PathOrPaths) -> list[LayerDataTuple]:
    """One image layer per file: (z, y, x) data, scale in mm, translate, CT window, geometry in metadata."""
    from napari_cycleinr.io import read_volume

    layers: list[LayerDataTuple] = []
    paths = _as_paths(path)
    for file in paths:
        if is_dicom_path(file):
            continue
        volume = read_volume(file)
        data, kwargs = volume_to_layer_data(volume, name=layer_name(file))
        layers.append((data, kwargs, "image"))
    layers.extend(read_dicom_layers([p for p in paths if is_dicom_path(p)]))
    widen_contrast_range_when_added()
    return layers


def is_dicom_path(path: Path) -> bool:
    """A DICOM file, or a folder with a DICOM file among its first files (down to a CD export's series folders)."""
    from napari_cycleinr.io.dicom import looks_like_dicom

    return looks_like_dicom(path, peek=DICOM_PEEK)


def read_dicom_layers(paths: Sequence[Path]) -> list[LayerDataTuple]:
    """One layer per series in the given DICOM folders, or per series of the given DICOM files."""
    from napari_cycleinr.io.dicom import read_all_series

    if not paths:
        return []
    wanted: dict[Path, set[str] | None] = {}
    for path in paths:
        if path.is_dir():
            wanted[path] = None
        else:
            uids = wanted.setdefault(path.parent, set())
            if uids is not None:
                uids.add(_series_uid(path))
    layers, refused = [], []
    for folder, uids in wanted.items():
        results = [(s, v) for s, v in read_all_series(folder) if uids is None or s.uid in uids]
        for stack, outcome in results:
            if isinstance(outcome, CycleINRError):
                refused.append(outcome)
                continue
            name = folder.name
            if len(results) > 1:
                name = f"{folder.name} {stack.key} {stack.description}".strip()
            data, kwargs = volume_to_layer_data(outcome, name=name)
            for key in ("slice_thickness_mm", "slice_spacing_mm"):
                kwargs["metadata"][key] = outcome.metadata.get(key)
            layers.append((data, kwargs, "image"))
    if refused and not layers:
        raise refused[0]
    for error in refused:
        warnings.warn(str(error), stacklevel=2)
    if not layers:
        raise CycleINRError(f"no DICOM image series in {', '.join(str(p) for p in paths)}")
    return layers


def _series_uid(path: Path) -> str:
    import pydicom

    from napari_cycleinr.io import library_errors

    with library_errors(path):
        return str(pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID", "") or "")


def layer_name(path: str | os.PathLike[str]) -> str:
    """The file name without its supported suffix ('scan.nii.gz' -> 'scan'); a folder keeps its name."""
    from napari_cycleinr.io import file_suffix

    name = Path(path).name
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else Path(name).stem


def _as_paths(path: Any) -> list[Path]:
    if isinstance(path, str | os.PathLike):
        return [Path(os.fspath(path))]
    if isinstance(path, list | tuple):
        return [Path(os.fspath(p)) for p in path]
    return []
