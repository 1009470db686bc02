"""NIfTI-1 (.nii, .nii.gz) through nibabel, with the header checked before a single voxel is read."""

from __future__ import annotations

import contextlib
import gzip
import logging
import struct
import warnings
import zlib
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
GREY_DATATYPES = {2, 4, 8, 16, 64, 256, 512, 768, 1024, 1280}
"""NIfTI datatype codes of single grey values we read (uint8 ... float64)."""
REFUSED_DATATYPES = {
    0: "an unknown voxel type (datatype 0)",
    1: "1-bit (binary) voxels; save the mask with 8-bit integers",
    32: "complex voxels (complex64); give a real-valued volume",
    128: "RGB colour voxels; give a grey-value volume",
    255: "an unknown voxel type (datatype 255)",
    1536: "128-bit floating point voxels; save them as float64 or float32",
    1792: "complex voxels (complex128); give a real-valued volume",
    2048: "complex voxels (complex256); give a real-valued volume",
    2304: "RGBA colour voxels; give a grey-value volume",
}
NIFTI1_MAX_DIM = 32767
MAX_EXTENSION_BYTES = 64 * 2**20
"""Header extensions (DICOM tags, AFNI XML) are kB to a few MB; nibabel reads them whole, unused here."""
MAX_DEFLATE_RATIO = 1100
"""gzip (deflate) cannot shrink data more than ~1032:1, so a .nii.gz of n bytes holds at most ~1032 n."""


def read(path: Path, axis: str | None = None) -> Volume:
    """A canonical Volume from a NIfTI file; header, shape, pixdim and size are checked before any voxel
    is read, so a damaged or lying file is refused without allocating what its header claims."""
    with library_errors(path), _quiet_nibabel():
        extensions = _check_raw_header(path)
        image = nib.load(path, mmap=False)  # no memory map: the file may be replaced while we hold the array
        if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
            raise unreadable(path, f"not a NIfTI image ({type(image).__name__})")
        header = image.header
        shape = _spatial_shape(tuple(int(n) for n in image.shape), path)
        on_disk = np.dtype(image.get_data_dtype())
        check_voxel_dtype(on_disk, path)
        offset = int(getattr(image.dataobj, "offset", header.get_data_offset()))  # where nibabel will read
        _check_file_holds_the_voxels(path, offset, shape, on_disk.itemsize)
        scaled = image.dataobj.slope != 1 or image.dataobj.inter != 0
        # the stored voxels (twice from gzip: GzipFile.readinto reads, then copies), plus nibabel's scaled
        # float copy when the header scales them
        stored = on_disk.itemsize * (2 if path.name.lower().endswith(".gz") else 1)
        check_fits_in_memory(shape, stored + (8 if scaled else 0), path, extensions)
        try:
            array = np.asarray(np.asanyarray(image.dataobj)).reshape(shape)
        except (EOFError, zlib.error) as error:
            reason = f"it is truncated or damaged (the compressed data breaks off: {error})"
            raise unreadable(path, reason) from None
        if scaled:
            _check_scaled_values(array, image.dataobj.slope, image.dataobj.inter, path)
        affine = np.array(image.affine, dtype=np.float64)
        codes = {key: int(header[key]) for key in ("qform_code", "sform_code", "xyzt_units")}
        slice_dim = header.get_dim_info()[2]
        descrip = bytes(np.asarray(header["descrip"]).tobytes()).split(b"\0", 1)[0]
    mm_per_unit = MM_PER_SPATIAL_UNIT.get(codes["xyzt_units"] & 0x07, 1.0)
    affine[:3, :] *= mm_per_unit
    metadata: dict[str, Any] = {
        "source_path": str(path.resolve()),
        "format": "nifti",
        "nifti_header": {**codes, "descrip": descrip.decode("utf-8", errors="replace").strip()},
    }
    if axis is None and slice_dim is not None:
        axis = "xyz"[slice_dim]  # the header names the slice axis (our writer records it): trust it
    return canonical_volume(array, affine, "xyz", axis, metadata)


def save(volume: Volume, path: Path) -> None:
    """Write `volume` as NIfTI; a volume read from NIfTI gets its own axis order and header codes back.

    Other volumes are stored in the usual (x, y, z) order. Both qform and sform carry the affine (the qform
    without any shear, which it cannot hold), and the spatial unit is always mm. The header's slice dimension
    names the through-plane axis, so a super-resolved file (whose z is now the finest axis) reads back the
    same way round.
    """
    from_nifti = volume.metadata.get("format") == "nifti"
    file_axes = volume.file_axes if from_nifti else (2, 1, 0)
    array, affine = file_layout(volume, file_axes)
    array = storable(array)
    fields = dict(volume.metadata.get("nifti_header") or {}) if from_nifti else {}
    qform_code = int(fields.get("qform_code") or fields.get("sform_code") or SCANNER_ANAT)
    sform_code = int(fields.get("sform_code") or fields.get("qform_code") or SCANNER_ANAT)
    # NIfTI-1 stores each dimension as int16: a longer axis (a very fine z grid) needs NIfTI-2, same file name
    image_class = nib.Nifti2Image if max(array.shape) > NIFTI1_MAX_DIM else nib.Nifti1Image
    image = image_class(array, affine, dtype=array.dtype)
    image.set_qform(affine, code=qform_code)
    image.set_sform(affine, code=sform_code)
    header = image.header
    header.set_dim_info(slice=file_axes[0])
    header["xyzt_units"] = NIFTI_MM | (int(fields.get("xyzt_units", 0)) & TIME_UNIT_BITS)
    header["descrip"] = str(fields.get("descrip") or "napari-cycleinr").encode("utf-8")[:79]
    nib.save(image, path)


@contextlib.contextmanager
def _quiet_nibabel():
    """Keep nibabel's header "fixes" ('sform_code 1025 not valid; setting to 0') off stderr while reading: the
    command line promises one line, and what matters is checked and reported here. (nibabel's own
    LoggingOutputSuppressor removes its handler, which lets Python's last-resort handler print instead.)"""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)  # nibabel still raises for problems at its error level
    try:
        with warnings.catch_warnings():
            # header extensions are never used here, so their size being odd is no concern of the user's
            warnings.filterwarnings("ignore", message="Extension size is not a multiple of 16")
            yield
    finally:
        logger.setLevel(level)


def _spatial_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """The 3D shape, dropping trailing singleton axes; anything else is not one volume."""
    if len(shape) < 3:
        raise unreadable(path, f"it is a {len(shape)}D image (shape {shape}); give a 3D volume")
    if all(n == 1 for n in shape[3:]):
        return shape[:3]  # type: ignore[return-value]
    if len(shape) == 4:
        raise unreadable(path, f"it has 4 dimensions with {shape[3]} volumes; give a single 3D volume")
    raise unreadable(path, f"it has {len(shape)} dimensions (shape {shape}); give a single 3D volume")


def _check_raw_header(path: Path) -> int:
    """Refuse what is not a NIfTI volume we can read, from the header as written in the file.

    nibabel silently 'repairs' some fields on load (abs of pixdim, zero -> 1) and gives cryptic messages for
    others, so the raw header is read first, unchecked: NIfTI-1 or -2 at all, a voxel type we read, the
    number of dimensions, then positive voxel sizes along the spatial axes the file has. Returns the bytes
    nibabel will hold for the header extensions, after refusing extensions it could not afford to read.
    """
    try:
        with ImageOpener(path) as file:
            start = file.read(4)
            if len(start) < 4:
                reason = "the file is empty" if not start else "the file is too short for a NIfTI header"
                raise unreadable(path, reason)
            sizes = {int.from_bytes(start, "little"), int.from_bytes(start, "big")}
            if 348 in sizes:
                header_class: type[nib.Nifti1Header] = nib.Nifti1Header
                header_size = 348
            elif 540 in sizes:
                header_class, header_size = nib.Nifti2Header, 540
            else:
                raise unreadable(path, "it is not a NIfTI file (its first bytes are not a NIfTI header)")
            rest = file.read(header_size - 4)
            if len(rest) < header_size - 4:
                raise unreadable(path, "the file is cut off inside its NIfTI header")
            raw = header_class(start + rest, check=False)  # not from_fileobj: it would read the extensions
            extensions = _extension_bytes(file, raw, path)
    except gzip.BadGzipFile:
        raise unreadable(path, "it is not gzip-compressed, although its name ends in .gz") from None
    except (EOFError, zlib.error):
        raise unreadable(path, "it is truncated or damaged (the compressed data breaks off)") from None
    if bytes(np.asarray(raw["magic"]).tobytes()).split(b"\0")[0] not in (b"n+1", b"n+2"):
        raise unreadable(path, "it is not a single-file NIfTI image (no 'n+1' magic in its header)")
    datatype = int(raw["datatype"])
    if datatype in REFUSED_DATATYPES:
        raise unreadable(path, f"it holds {REFUSED_DATATYPES[datatype]}")
    if datatype not in GREY_DATATYPES:
        raise unreadable(path, f"its voxel type code {datatype} is not a NIfTI data type")
    dims = [int(n) for n in raw["dim"]]
    if not 1 <= dims[0] <= 7 or any(n < 1 for n in dims[1 : dims[0] + 1]):
        shown = dims[: max(1, min(dims[0], 7)) + 1]
        raise unreadable(path, f"its header has an invalid shape (dim = {shown})")
    _spatial_shape(tuple(dims[1 : dims[0] + 1]), path)
    pixdim = [float(v) for v in raw["pixdim"][1 : min(dims[0], 3) + 1]]
    if not all(np.isfinite(v) and v > 0 for v in pixdim):
        said = ", ".join(f"{v:.6g}" for v in pixdim)
        raise unreadable(path, f"voxel sizes (pixdim) must be positive numbers, the header says [{said}]")
    return extensions


def _extension_bytes(file: Any, raw: nib.Nifti1Header, path: Path) -> int:
    """Walk the header extensions (sizes only, skipping their content) as nibabel will read them, and refuse
    a chain that would make it allocate more than MAX_EXTENSION_BYTES or read to the end of the file."""
    flag = file.read(4)
    if len(flag) < 4 or flag[:1] == b"\0":
        return 0
    order = "<" if raw.endianness == "<" else ">"
    remaining = int(raw["vox_offset"]) - file.tell()
    total = 0
    while remaining >= 16:
        size, _code = struct.unpack(f"{order}ii", file.read(8).ljust(8, b"\0"))
        if size < 16:
            raise unreadable(path, f"a header extension has an impossible size ({size} bytes): it is damaged")
        total += size
        if total > MAX_EXTENSION_BYTES:
            raise unreadable(
                path,
                f"its header extensions hold more than {MAX_EXTENSION_BYTES // 2**20} MB "
                "(this is not voxel data): it is damaged or crafted",
            )
        file.seek(size - 8, 1)
        remaining -= size
    return 2 * total  # nibabel keeps each extension's content and a copy without trailing zeros


def _check_scaled_values(array: np.ndarray, slope: float, inter: float, path: Path) -> None:
    """A scl_slope/scl_inter that turn stored numbers into infinities or into values no float32 holds is a
    damaged header: refuse it rather than let the intensity window clip it silently."""
    if array.size == 0 or array.dtype.kind != "f":
        return
    low, high = float(np.min(array)), float(np.max(array))
    if np.isnan(low) or np.isnan(high):  # float voxels that hold NaN themselves: kept as they are
        return
    largest = max(abs(low), abs(high))
    if largest > float(np.finfo(np.float32).max):
        raise unreadable(
            path,
            f"its scaling (scl_slope {slope:.6g}, scl_inter {inter:.6g}) gives values up to {largest:.3g}, "
            "beyond what a float32 holds: the header is damaged",
        )


def _check_file_holds_the_voxels(path: Path, offset: int, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse a header that promises more voxel bytes than the file can hold: a truncated file, or a lying
    header that would make the reader allocate gigabytes before finding out."""
    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    needed = offset + voxels * int(itemsize)
    size = path.stat().st_size
    compressed = path.name.lower().endswith(".gz")
    if needed <= (size * MAX_DEFLATE_RATIO if compressed else size):
        return
    if needed >= 1e9:
        amount = f"{needed / 1e9:.1f} GB"
    else:
        amount = f"{needed / 1e6:.1f} MB" if needed >= 1e6 else f"{needed:,} bytes"
    kind = "compressed file" if compressed else "file"
    raise unreadable(
        path,
        f"its header describes {voxels:,} voxels ({amount}) but the {kind} has only {size:,} bytes: "
        "it is truncated or its header is damaged",
    )
