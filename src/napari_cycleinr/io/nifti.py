"""NIfTI-1 (.nii, .nii.gz) through nibabel, with the header checked before a single voxel is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from napari_cycleinr.io import (
    canonical_volume,
    check_fits_in_memory,
    check_voxel_dtype,
    file_layout,
    library_errors,
    storable,
    unreadable,
)
from napari_cycleinr.volume import Volume

MM_PER_SPATIAL_UNIT = {0: 1.0, 1: 1000.0, 2: 1.0, 3: 0.001}
"""xyzt_units & 7: unknown (taken as mm, as every viewer does), metre, mm, micron. Volumes are always mm."""
NIFTI_MM = 2
TIME_UNIT_BITS = 0x38
SCANNER_ANAT = 1


def read(path: Path, axis: str | None = None) -> Volume:
    """A canonical Volume from a NIfTI file; shape, pixdim and size are checked before the voxels are read."""
    with library_errors(path):
        image = nib.load(path, mmap=False)  # no memory map: the file may be replaced while we hold the array
        if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
            raise unreadable(path, f"not a NIfTI image ({type(image).__name__})")
        header = image.header
        shape = _spatial_shape(tuple(int(n) for n in image.shape), path)
        _check_pixdim(path, type(header))
        on_disk = np.dtype(image.get_data_dtype())
        check_voxel_dtype(on_disk, path)
        scaled = image.dataobj.slope != 1 or image.dataobj.inter != 0
        check_fits_in_memory(shape, max(on_disk.itemsize, 8 if scaled else 0), path)
        array = np.asarray(np.asanyarray(image.dataobj)).reshape(shape)
        affine = np.array(image.affine, dtype=np.float64)
        codes = {key: int(header[key]) for key in ("qform_code", "sform_code", "xyzt_units")}
        descrip = bytes(np.asarray(header["descrip"]).tobytes()).split(b"\0", 1)[0]
    mm_per_unit = MM_PER_SPATIAL_UNIT.get(codes["xyzt_units"] & 0x07, 1.0)
    affine[:3, :] *= mm_per_unit
    metadata: dict[str, Any] = {
        "source_path": str(path.resolve()),
        "format": "nifti",
        "nifti_header": {**codes, "descrip": descrip.decode("utf-8", errors="replace").strip()},
    }
    return canonical_volume(array, affine, "xyz", axis, metadata)


def save(volume: Volume, path: Path) -> None:
    """Write `volume` as NIfTI; a volume read from NIfTI gets its own axis order and header codes back.

    Other volumes are stored in the usual (x, y, z) order. Both qform and sform carry the affine (the qform
    without any shear, which it cannot hold), and the spatial unit is always mm.
    """
    from_nifti = volume.metadata.get("format") == "nifti"
    array, affine = file_layout(volume, volume.file_axes if from_nifti else (2, 1, 0))
    array = storable(array)
    fields = dict(volume.metadata.get("nifti_header") or {}) if from_nifti else {}
    qform_code = int(fields.get("qform_code") or fields.get("sform_code") or SCANNER_ANAT)
    sform_code = int(fields.get("sform_code") or fields.get("qform_code") or SCANNER_ANAT)
    image = nib.Nifti1Image(array, affine, dtype=array.dtype)
    image.set_qform(affine, code=qform_code)
    image.set_sform(affine, code=sform_code)
    header = image.header
    header["xyzt_units"] = NIFTI_MM | (int(fields.get("xyzt_units", 0)) & TIME_UNIT_BITS)
    header["descrip"] = str(fields.get("descrip") or "napari-cycleinr").encode("utf-8")[:79]
    nib.save(image, path)


def _spatial_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """The 3D shape, dropping trailing singleton axes; anything else is not one volume."""
    if len(shape) < 3:
        raise unreadable(path, f"it is a {len(shape)}D image (shape {shape}); give a 3D volume")
    if all(n == 1 for n in shape[3:]):
        return shape[:3]  # type: ignore[return-value]
    if len(shape) == 4:
        raise unreadable(path, f"it has 4 dimensions with {shape[3]} volumes; give a single 3D volume")
    raise unreadable(path, f"it has {len(shape)} dimensions (shape {shape}); give a single 3D volume")


def _check_pixdim(path: Path, header_class: type[nib.Nifti1Header]) -> None:
    """Refuse zero, negative or NaN voxel sizes as written in the file.

    nibabel silently 'repairs' them on load (abs, zero -> 1), so the raw header is read once more unchecked.
    """
    with ImageOpener(path) as file:
        raw = header_class.from_fileobj(file, check=False)
    pixdim = [float(v) for v in raw["pixdim"][1:4]]
    if not all(np.isfinite(v) and v > 0 for v in pixdim):
        raise unreadable(path, f"voxel sizes (pixdim) must be positive numbers, the header says {pixdim}")
