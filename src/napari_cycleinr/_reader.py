"""napari reader for NIfTI (.nii, .nii.gz) and TIFF (.tif, .tiff) volumes.

`napari_get_reader` only looks at the path (never opens the file, never raises) and returns None for anything
else, so napari can offer other readers. The reader itself reads through `napari_cycleinr.io` and builds the
layer through `_layers`, like every other part of the plugin; a damaged file raises a CycleINRError that
napari shows as a one-line notification.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_cycleinr._layers import volume_to_layer_data, widen_contrast_range_when_added

PathOrPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
LayerDataTuple = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerDataTuple]] | None:
    """`read_files` when every path is an existing file with a supported suffix, else None."""
    try:
        paths = _as_paths(path)
        if not paths:
            return None
        from napari_cycleinr.io import is_supported

        if all(is_supported(p) and p.is_file() for p in paths):
            return read_files
    except Exception:  # an odd path object or an unreadable folder: not ours
        return None
    return None


def read_files(path: PathOrPaths) -> list[LayerDataTuple]:
    """One image layer per file: (z, y, x) data, scale in mm, translate, CT window, geometry in metadata."""
    from napari_cycleinr.io import read_volume

    layers = []
    for file in _as_paths(path):
        volume = read_volume(file)
        data, kwargs = volume_to_layer_data(volume, name=layer_name(file))
        layers.append((data, kwargs, "image"))
    widen_contrast_range_when_added()
    return layers


def layer_name(path: str | os.PathLike[str]) -> str:
    """The file name without its supported suffix ('scan.nii.gz' -> 'scan')."""
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
