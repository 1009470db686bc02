"""Volume <-> napari image layer: the one place where geometry crosses into napari.

The reader, the widget, the sample data and the writers all go through these functions, so a layer always
carries the same geometry it was made from.

napari gets the volume as data (z, y, x) with `scale` = voxel spacing in mm and `translate` = the origin
expressed along the volume's own axes, `D^-1 @ origin` where D holds the affine's unit direction columns.
For an axis-aligned scan that is simply the origin in (z, y, x) order; for a scan stored with flipped axes
(the usual DICOM-derived NIfTI, x and y running towards -R and -A) it is the origin in those flipped
coordinates, so every layer derived from one scan (input, super-resolved, reference, error) overlays exactly,
and the image is shown the way it is stored (radiological convention for axial CT). No napari `affine` is
set: the rotation and flips stay in `metadata['cycleinr']`, from which the writers restore them.

`metadata['cycleinr']` holds everything a writer needs: the canonical affine, the file's axis order, the
Volume's own metadata (source path, format, header fields, modality, provenance) and the paths a writer must
never overwrite. A layer made elsewhere (no such entry) is treated as axis-aligned, from scale and translate.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.volume import Volume

KEY = "cycleinr"
UNITS = ("mm", "mm", "mm")
AXIS_LABELS = ("z", "y", "x")
CT_WINDOW = (40.0, 400.0)
"""Level and width in HU of the window a CT opens with (soft tissue, W400/L40)."""
MR_PERCENTILES = (1.0, 99.0)
DIFFERENCE_LIMITS = (-200.0, 200.0)
"""Contrast of the error and consistency images, in the volume's units (HU for CT)."""
DIFFERENCE_COLORMAP = "coolwarm"

LayerData = tuple[np.ndarray, dict[str, Any]]


# --- geometry ---------------------------------------------------------------------------------------------


def scale_translate(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """napari's (scale, translate) in (z, y, x) for a canonical affine (see the module docstring)."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    translate = np.linalg.solve(direction, affine[:3, 3])
    return spacing, translate


def affine_from_scale_translate(
    scale: Sequence[float], translate: Sequence[float], reference_affine: np.ndarray | None = None
) -> np.ndarray:
    """The canonical affine for napari's scale and translate, keeping the reference affine's directions.

    Without a reference the volume is axis-aligned (canonical z, y, x -> world z, y, x), as in
    `Volume.from_spacing`.
    """
    scale = np.asarray(scale, dtype=np.float64)
    translate = np.asarray(translate, dtype=np.float64)
    if reference_affine is None:
        direction = np.zeros((3, 3))
        direction[[2, 1, 0], [0, 1, 2]] = 1.0
    else:
        reference_affine = np.asarray(reference_affine, dtype=np.float64)
        direction = reference_affine[:3, :3] / np.linalg.norm(reference_affine[:3, :3], axis=0)
    affine = np.eye(4)
    affine[:3, :3] = direction * scale
    affine[:3, 3] = direction @ translate
    return affine


def _geometry_matches(affine: np.ndarray, scale: np.ndarray, translate: np.ndarray) -> bool:
    """Whether napari's scale/translate still say what the stored affine says (the user did not edit them)."""
    spacing, origin = scale_translate(affine)
    tolerance = 1e-6 * max(1.0, float(np.max(np.abs(origin))), float(np.max(spacing)))
    return bool(
        np.allclose(scale, spacing, rtol=1e-9, atol=0)
        and np.allclose(translate, origin, rtol=0, atol=tolerance)
    )


# --- Volume -> layer --------------------------------------------------------------------------------------


def display_limits(data: np.ndarray, modality: str | None) -> tuple[float, float]:
    """The contrast a layer opens with: W400/L40 for CT, the 1-99 percentiles for anything else."""
    if (modality or "").upper() == "CT":
        level, width = CT_WINDOW
        return level - width / 2.0, level + width / 2.0
    sample = np.asarray(data[:: max(1, data.shape[0] // 16)], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(sample, MR_PERCENTILES))
    if not high > low:
        low, high = float(sample.min()), float(sample.max())
    if not high > low:
        high = low + 1.0
    return low, high


def data_range(data: np.ndarray) -> tuple[float, float]:
    """Finite minimum and maximum of the data (0, 1 if there is no finite value)."""
    values = np.asarray(data)
    if values.dtype.kind == "f":
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return 0.0, 1.0
        return float(finite.min()), float(finite.max())
    return float(values.min()), float(values.max())


def volume_to_layer_data(
    volume: Volume,
    *,
    name: str | None = None,
    role: str = "image",
    protect: Sequence[str | os.PathLike[str]] = (),
    contrast_limits: Sequence[float] | None = None,
    colormap: str | None = None,
    **layer_kwargs: Any,
) -> LayerData:
    """(data, kwargs) for `viewer.add_image(data, **kwargs)` or a reader's LayerData tuple.

    `role` ('image', 'super_resolved', 'error', 'consistency') is recorded; `protect` lists files a writer
    must never overwrite with this layer (besides its volume's own source file). Difference images get the
    diverging colormap and a [-200, 200] contrast unless told otherwise.
    """
    scale, translate = scale_translate(volume.affine)
    metadata = dict(volume.metadata)
    protected = [str(p) for p in protect]
    if metadata.get("source_path"):
        protected.insert(0, str(metadata["source_path"]))
    low, high = data_range(volume.data)
    difference = role in ("error", "consistency")
    if contrast_limits is None:
        contrast_limits = (
            DIFFERENCE_LIMITS if difference else display_limits(volume.data, metadata.get("modality"))
        )
    contrast_limits = (float(contrast_limits[0]), float(contrast_limits[1]))
    kwargs: dict[str, Any] = {
        "scale": tuple(float(s) for s in scale),
        "translate": tuple(float(t) for t in translate),
        "units": UNITS,
        "axis_labels": AXIS_LABELS,
        "contrast_limits": contrast_limits,
        "colormap": colormap or (DIFFERENCE_COLORMAP if difference else "gray"),
        "metadata": {
            KEY: {
                "role": role,
                "affine": volume.affine.tolist(),
                "file_axes": list(volume.file_axes),
                "volume_metadata": metadata,
                "protected_paths": list(dict.fromkeys(protected)),
                "data_range": [min(low, contrast_limits[0]), max(high, contrast_limits[1])],
            }
        },
    }
    if name is not None:
        kwargs["name"] = name
    kwargs.update(layer_kwargs)
    return volume.data, kwargs


# --- layer -> Volume --------------------------------------------------------------------------------------


def layer_meta(layer: Any) -> dict[str, Any]:
    """The parts of a live napari layer's state that `layer_to_volume` reads (what a writer is given)."""
    return {
        "name": getattr(layer, "name", "layer"),
        "scale": tuple(np.asarray(layer.scale, dtype=float)),
        "translate": tuple(np.asarray(layer.translate, dtype=float)),
        "metadata": dict(getattr(layer, "metadata", {}) or {}),
        "rgb": bool(getattr(layer, "rgb", False)),
        "multiscale": bool(getattr(layer, "multiscale", False)),
    }


def layer_info(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The `metadata['cycleinr']` entry of a layer's state, or {} for a layer made elsewhere."""
    info = (meta.get("metadata") or {}).get(KEY)
    return dict(info) if isinstance(info, Mapping) else {}


def layer_geometry(
    meta: Mapping[str, Any], ndim: int = 3
) -> tuple[np.ndarray, tuple[int, int, int], dict[str, Any]]:
    """(affine, file_axes, volume metadata) of a layer from its state: the stored affine when scale and
    translate are unchanged, else one rebuilt from them with the stored orientation."""
    name = meta.get("name", "the layer")
    if ndim != 3:
        raise CycleINRError(
            f"{name} is a {ndim}D image; super-resolution and these writers need a 3D volume (z, y, x)"
        )
    scale = np.asarray(meta.get("scale", (1.0,) * ndim), dtype=np.float64)[-3:]
    translate = np.asarray(meta.get("translate", (0.0,) * ndim), dtype=np.float64)[-3:]
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise CycleINRError(f"{name} has a scale of {tuple(scale)}; the voxel spacing must be positive")
    info = layer_info(meta)
    stored = info.get("affine")
    volume_metadata: dict[str, Any] = dict(info.get("volume_metadata") or {})
    file_axes = tuple(int(a) for a in info.get("file_axes", (0, 1, 2)))
    if sorted(file_axes) != [0, 1, 2]:
        file_axes = (0, 1, 2)
    try:
        affine = None if stored is None else np.asarray(stored, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError):
        affine = None
    if affine is not None and not np.all(np.isfinite(affine)):
        affine = None
    if affine is None or not _geometry_matches(affine, scale, translate):
        affine = affine_from_scale_translate(scale, translate, affine)
    return affine, file_axes, volume_metadata  # type: ignore[return-value]


def layer_to_volume(data: Any, meta: Mapping[str, Any]) -> Volume:
    """A Volume from an image layer's data and state (`layer.as_layer_data_tuple()[1]` or `layer_meta`)."""
    name = meta.get("name", "the layer")
    if meta.get("rgb"):
        raise CycleINRError(f"{name} is an RGB image; give a grey-value 3D volume")
    if meta.get("multiscale") or isinstance(data, list | tuple):
        raise CycleINRError(f"{name} is a multiscale image; give a single-resolution 3D volume")
    array = np.asarray(data)
    affine, file_axes, volume_metadata = layer_geometry(meta, array.ndim)
    if "modality" not in volume_metadata:
        from napari_cycleinr.io import guess_modality

        volume_metadata["modality"] = guess_modality(array)
    return Volume(array, affine, file_axes=file_axes, metadata=volume_metadata)


REFERENCE_PATH_KEY = "reference_path"
"""Volume metadata key naming the reference a result was scored against: its writers refuse that file too."""


def protected_paths(meta: Mapping[str, Any]) -> list[str]:
    """Files a writer must not overwrite with this layer: its source, the inputs it was computed from and
    the reference it was compared with (the package's own files are refused by the output guard itself)."""
    info = layer_info(meta)
    paths = [str(p) for p in info.get("protected_paths") or ()]
    volume_metadata = info.get("volume_metadata") or {}
    records = [volume_metadata, *(v for v in volume_metadata.values() if isinstance(v, Mapping))]
    for record in records:  # e.g. metadata["reference_path"], metadata["error_image"]["reference_path"]
        paths += [str(record[key]) for key in ("source_path", REFERENCE_PATH_KEY) if record.get(key)]
    return list(dict.fromkeys(paths))


# --- napari side effects ----------------------------------------------------------------------------------

_hooked_viewers: weakref.WeakSet[Any] = weakref.WeakSet()


def widen_contrast_range(layer: Any) -> None:
    """Let the contrast slider reach the whole data range recorded in the layer's metadata.

    napari takes the slider's range from the contrast limits a reader hands it, so a CT opened at W400/L40
    could not be windowed wider than that; this widens the range, not the window.
    """
    info = (getattr(layer, "metadata", None) or {}).get(KEY)
    if (
        not isinstance(info, Mapping)
        or not info.get("data_range")
        or not hasattr(layer, "contrast_limits_range")
    ):
        return
    low, high = (float(v) for v in info["data_range"])
    current_low, current_high = layer.contrast_limits_range
    low, high = min(low, current_low), max(high, current_high)
    if math.isfinite(low) and math.isfinite(high) and high > low:
        layer.contrast_limits_range = (low, high)


def widen_contrast_range_when_added() -> None:
    """Make the current viewer widen the contrast range of each of our layers it adds (readers and samples
    cannot touch the layers napari builds from their data). Best effort: never raises."""
    try:
        import napari

        viewer = napari.current_viewer()
        if viewer is None or viewer in _hooked_viewers:
            return
        viewer.layers.events.inserted.connect(_on_layer_inserted)
        _hooked_viewers.add(viewer)
    except Exception:  # a missing or closing viewer only costs the wider slider range
        return


def _on_layer_inserted(event: Any) -> None:
    try:
        widen_contrast_range(event.value)
    except Exception:
        return
