"""napari writers: an image layer (input, super-resolved, error, consistency) as NIfTI, TIFF or DICOM.

The layer becomes a Volume again through `_layers.layer_to_volume`: its stored affine and file axis order when
scale and translate are unchanged, else an affine rebuilt from them with the stored orientation. Writes go
through `napari_cycleinr.io.write_volume` and so the output guard (io/guard.py): atomic, never over the
layer's source file, the inputs it was computed from, the reference it was scored against, nor any file of
the installed package. NIfTI keeps the full orientation; TIFF (ImageJ for uint8/uint16/int16/float32, OME-TIFF
otherwise) keeps spacing and origin. DICOM writes a new derived series of the layer's study into a folder.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from napari_cycleinr._layers import layer_to_volume, protected_paths
from napari_cycleinr.errors import CycleINRError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TIFF_SUFFIXES = (".tif", ".tiff")
DICOM_SUFFIX = ".dcm"
"""What selects the DICOM writer in napari's save dialog; the series is a folder named without it."""
FOLDER_SUFFIX = ".nii.gz"
"""What each layer becomes when several layers are saved to a folder."""

FullLayerData = tuple[Any, dict[str, Any], str]
Writer = TypeVar("Writer", bound=Callable[..., list[str]])


def _reason_shown(writer: Writer) -> Writer:
    """napari's Save dialog says only that the save failed: show the guard's reason (why nothing was
    written, what to choose instead) as an error notification first, then re-raise for napari."""

    @functools.wraps(writer)
    def write(*args: Any, **kwargs: Any) -> list[str]:
        try:
            return writer(*args, **kwargs)
        except CycleINRError as error:
            from napari.utils.notifications import show_error

            show_error(f"nothing was saved: {error}")
            raise

    return write  # type: ignore[return-value]


@_reason_shown
def write_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer as NIfTI; returns the path written."""
    return [_write_layer(path, data, meta, NIFTI_SUFFIXES)]


@_reason_shown
def write_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer as a TIFF stack with its spacing (and origin); returns the path written."""
    return [_write_layer(path, data, meta, TIFF_SUFFIXES)]


@_reason_shown
def write_dicom(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer as a new DICOM series in the folder `path`; returns the folder written.

    napari picks a writer by extension, so 'result.dcm' chooses this one and names the folder 'result'
    (a path without the extension is taken as the folder itself). The series joins the study the layer
    came from (a layer read from DICOM, or computed from one); its description says what it is
    ('CycleINR 5->1.25 mm', '... error' for an error image).
    """
    from napari_cycleinr._layers import layer_info
    from napari_cycleinr.io.dicom import default_description, write_dicom_series

    volume = layer_to_volume(data, meta)
    role = str(layer_info(meta).get("role") or "image")
    description = default_description(volume) + ("" if role in ("image", "super_resolved") else f" {role}")
    folder = path[: -len(DICOM_SUFFIX)] if path.lower().endswith(DICOM_SUFFIX) else path
    folder = write_dicom_series(
        volume, folder, description=description, overwrite=True, refuse=protected_paths(meta)
    )
    return [str(folder)]


@_reason_shown
def write_layers_to_folder(path: str, layer_data: list[FullLayerData]) -> list[str]:
    """Write several image layers into the folder `path` (made if needed), one `<layer name>.nii.gz` each.

    A path ending in a supported suffix names the folder without it and that suffix is used for every layer.
    """
    from napari_cycleinr.io import file_suffix
    from napari_cycleinr.io.guard import guard_output, make_folder

    folder = Path(os.fspath(path)).expanduser()
    suffix = file_suffix(folder) or FOLDER_SUFFIX
    if file_suffix(folder):
        folder = folder.with_name(folder.name[: -len(suffix)])
    guard_output(folder, kind="folder")  # not a file, not inside the package: before anything is made
    non_images = [meta.get("name", "?") for _, meta, kind in layer_data if kind != "image"]
    if non_images:
        raise CycleINRError(f"only image layers can be saved here, not {', '.join(non_images)}")
    folder = make_folder(folder)
    written, used = [], set()
    for data, meta, _ in layer_data:
        stem = _safe_name(str(meta.get("name") or "layer"))
        name, n = stem, 1
        while name.lower() in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name.lower())
        allowed = NIFTI_SUFFIXES if suffix in NIFTI_SUFFIXES else TIFF_SUFFIXES
        written.append(_write_layer(str(folder / f"{name}{suffix}"), data, meta, allowed))
    return written


def _write_layer(path: str, data: Any, meta: dict[str, Any], allowed: tuple[str, ...]) -> str:
    from napari_cycleinr.io import file_suffix, write_volume

    suffix = file_suffix(path)
    if suffix not in allowed:
        raise CycleINRError(f"{Path(path).name}: this writer saves {' or '.join(allowed)} files")
    volume = layer_to_volume(data, meta)
    return str(write_volume(volume, path, refuse=protected_paths(meta)))


def _safe_name(name: str) -> str:
    """A layer name as a file name: path separators and control characters replaced."""
    cleaned = re.sub(r"[\\/:*?\"<>|\x00-\x1f]+", "_", name).strip(" .")
    return cleaned or "layer"
