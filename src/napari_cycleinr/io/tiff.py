"""TIFF stacks (.tif, .tiff) through tifffile, with voxel spacing from ImageJ or OME metadata.

TIFF holds no orientation, only spacing and (in our files) an origin, so a TIFF volume's affine is
axis-aligned: file axes (z, y, x) map to world z, y, x.

Writing: ImageJ hyperstacks for uint8, uint16, int16 and float32 (the types ImageJ opens), with the voxel
size as X/YResolution + 'spacing' in mm and the origin as ImageJ's own 'xorigin', 'yorigin', 'zorigin'
(in pixels, as ImageJ defines them, so ImageJ shows the same coordinates). Every other type (int8, int32,
uint32, int64, uint64, float64) goes to OME-TIFF with PhysicalSize and Plane positions in mm, which keeps
the type exactly instead of converting it. Both record the through-plane axis (an ImageJ key, or
`cycleinr_slice_axis=z` as the OME Image Description), so a super-resolved stack, whose finest spacing is
along z, reads back with the same axis as z.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_cycleinr.errors import CycleINRError
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

IMAGEJ_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)
MM_PER_UNIT = {
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0,
    "cm": 10.0, "centimeter": 10.0, "centimetre": 10.0,
    "m": 1000.0, "meter": 1000.0, "metre": 1000.0,
    "um": 1e-3, "µm": 1e-3, "micron": 1e-3, "microns": 1e-3, "micrometer": 1e-3, "micrometre": 1e-3,
    "nm": 1e-6, "nanometer": 1e-6, "nanometre": 1e-6,
    "in": 25.4, "inch": 25.4,
}  # fmt: skip
OME_DEFAULT_LENGTH_UNIT = "µm"
"""What the OME schema means by a PhysicalSize without a unit."""
FILE_LETTERS = "zyx"
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
"""Little- and big-endian TIFF, then BigTIFF."""


SLICE_AXIS_KEY = "cycleinr_slice_axis"
"""Extra ImageJ metadata key naming the through-plane file axis ('z', 'y' or 'x'), written by this package."""


def read(path: Path, axis: str | None = None) -> Volume:
    """A canonical Volume from a 3D grayscale TIFF stack, spacing in mm (1 mm, with a warning, if unknown)."""
    with library_errors(path), _tifffile_complaints() as complaints:
        with open(path, "rb") as file:
            start = file.read(4)
        if len(start) < 4:
            raise unreadable(path, "the file is empty" if not start else "the file is too short for a TIFF")
        if start not in TIFF_MAGIC:
            raise unreadable(path, "it is not a TIFF file (its first bytes are not a TIFF header)")
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise unreadable(path, "the TIFF holds no image")
            series = tif.series[0]
            try:
                shape = _volume_shape(tuple(series.shape), series.axes, path)
            except CycleINRError:
                if complaints:  # e.g. a truncated stack of which only the first page is left
                    raise unreadable(path, f"it is truncated or damaged ({complaints[0]})") from None
                raise
            check_voxel_dtype(series.dtype, path)
            _check_file_holds_the_voxels(path, series, shape)
            _check_strips_are_distinct(path, series)
            check_fits_in_memory(shape, series.dtype.itemsize, path)
            flavour = "ome" if tif.is_ome else "imagej" if tif.is_imagej else "plain"
            geometry = {"ome": _ome_geometry, "imagej": _imagej_geometry}.get(flavour, _no_geometry)(tif)
            array = np.asarray(series.asarray()).reshape(shape)
            declared = _declared_slice_axis(tif, flavour)
    if axis is None and declared in tuple(FILE_LETTERS):
        axis = declared
    spacing, origin, unit, missing = geometry
    if missing:
        warnings.warn(
            f"{path.name}: voxel spacing not fully known ({missing}); assuming 1 mm where it is missing",
            UserWarning,
            stacklevel=3,
        )
    metadata: dict[str, Any] = {
        "source_path": str(path.resolve()),
        "format": "tiff",
        "tiff_flavour": flavour,
        "tiff_unit": unit,
        "spacing_assumed": bool(missing),
    }
    file_volume = Volume.from_spacing(array, spacing, origin)
    return canonical_volume(file_volume.data, file_volume.affine, FILE_LETTERS, axis, metadata)


def save(volume: Volume, path: Path) -> None:
    """Write `volume` as an ImageJ hyperstack, or OME-TIFF for types ImageJ lacks (see the module docstring).

    A volume read from TIFF gets its own axis order back; any other is stored as canonical (z, y, x).
    TIFF cannot hold rotations or flips, so those are dropped with a warning; spacing and origin are kept.
    """
    from_tiff = volume.metadata.get("format") == "tiff"
    file_axes = volume.file_axes if from_tiff else (0, 1, 2)
    array, affine = file_layout(volume, file_axes)
    array = storable(array)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)  # (z, y, x), since file axes are (z, y, x)
    # The origin along the volume's own axes (napari's translate, see _layers): for an axis-aligned volume
    # the world origin in (z, y, x); for a flipped one (LPS-stored NIfTI) the origin in those flipped axes,
    # so the stack, read back axis-aligned, lies where the layer it was saved from lay.
    origin = np.linalg.solve(affine[:3, :3] / spacing, affine[:3, 3])
    axis_aligned = np.zeros((3, 3))
    axis_aligned[[2, 1, 0], [0, 1, 2]] = spacing
    if not np.allclose(affine[:3, :3], axis_aligned, atol=1e-6 * spacing.max()):
        warnings.warn(
            "TIFF stores no orientation: the volume's rotation or flips are dropped "
            "(spacing kept, and the origin along the volume's own axes: it reopens where napari showed it)",
            UserWarning,
            stacklevel=2,
        )
    if array.dtype in IMAGEJ_DTYPES:
        _write_imagej(path, array, spacing, origin, FILE_LETTERS[file_axes[0]])
    else:
        _write_ome(path, array, spacing, origin, FILE_LETTERS[file_axes[0]])


def _write_imagej(path: Path, array: np.ndarray, spacing: np.ndarray, origin: np.ndarray, slice_axis: str) -> None:
    sz, sy, sx = (float(s) for s in spacing)
    metadata = {
        "axes": "ZYX",
        SLICE_AXIS_KEY: slice_axis,  # the through-plane axis, so a super-resolved stack reads back the same way
        "spacing": sz,
        "unit": "mm",
        # ImageJ's calibration: position = (index - origin) * size, so its origin is in pixels and negated.
        "xorigin": -float(origin[2]) / sx,
        "yorigin": -float(origin[1]) / sy,
        "zorigin": -float(origin[0]) / sz,
    }
    tifffile.imwrite(
        path, array, imagej=True, photometric="minisblack", resolution=(1.0 / sx, 1.0 / sy), metadata=metadata
    )


def _write_ome(path: Path, array: np.ndarray, spacing: np.ndarray, origin: np.ndarray, slice_axis: str) -> None:
    sz, sy, sx = (float(s) for s in spacing)
    n_planes = array.shape[0]
    metadata: dict[str, Any] = {
        "axes": "ZYX",
        "Description": f"{SLICE_AXIS_KEY}={slice_axis}",  # the through-plane axis, as in ImageJ files
        "PhysicalSizeX": sx, "PhysicalSizeXUnit": "mm",
        "PhysicalSizeY": sy, "PhysicalSizeYUnit": "mm",
        "PhysicalSizeZ": sz, "PhysicalSizeZUnit": "mm",
        "Plane": {
            "PositionX": [float(origin[2])] * n_planes, "PositionXUnit": ["mm"] * n_planes,
            "PositionY": [float(origin[1])] * n_planes, "PositionYUnit": ["mm"] * n_planes,
            "PositionZ": [float(origin[0]) + k * sz for k in range(n_planes)],
            "PositionZUnit": ["mm"] * n_planes,
        },
    }  # fmt: skip
    needs_bigtiff = array.nbytes > 2**32 - 2**25  # classic TIFF offsets are 32-bit; leave room for tags
    tifffile.imwrite(
        path, array, ome=True, photometric="minisblack", metadata=metadata, bigtiff=needs_bigtiff
    )


@contextlib.contextmanager
def _tifffile_complaints():
    """Collect what tifffile logs while reading (damaged IFDs, bad offsets) instead of printing it: the
    command line promises one line on stderr, and the reason goes into our own message when reading fails."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with contextlib.suppress(Exception):
                text = re.sub(r"<[^<>]*>", "", record.getMessage())  # drop tifffile's object reprs
                messages.append(" ".join(text.replace("('", "(").replace("')", ")").split())[:200])

    logger = logging.getLogger("tifffile")
    handler, propagate = Collect(level=logging.DEBUG), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _check_file_holds_the_voxels(path: Path, series: Any, shape: tuple[int, int, int]) -> None:
    """Refuse an uncompressed stack whose pages claim more voxel bytes than the file has (truncated, or a
    damaged header that would make the reader allocate what it claims before failing)."""
    keyframe = getattr(series, "keyframe", None)
    if keyframe is None or int(getattr(keyframe, "compression", 1)) != 1:
        return  # compressed data: its size on disk says nothing about the array's
    bits = int(getattr(keyframe, "bitspersample", 8 * series.dtype.itemsize) or 1)  # masks: 1 bit per voxel
    needed = (int(np.prod([int(n) for n in shape], dtype=object)) * bits + 7) // 8
    size = path.stat().st_size
    if needed > size:
        raise unreadable(
            path,
            f"its pages describe {needed:,} bytes of voxels {tuple(shape)} but the file has only "
            f"{size:,} bytes: it is truncated or damaged",
        )


def _check_strips_are_distinct(path: Path, series: Any) -> None:
    """Refuse strips or tiles that point at the same (or overlapping) bytes: an honest writer stores each
    once, and a crafted file uses this to make a few kB of compressed data decode into gigabytes."""
    if getattr(series, "dataoffset", None) is not None:
        return  # one contiguous block of uncompressed voxels, checked against the file size already
    chunks = []
    for page in getattr(series, "pages", ()) or ():
        offsets, counts = getattr(page, "dataoffsets", ()) or (), getattr(page, "databytecounts", ()) or ()
        chunks += [(int(o), int(n)) for o, n in zip(offsets, counts, strict=False) if int(n) > 0]
    chunks.sort()
    for (offset, count), (next_offset, _) in zip(chunks, chunks[1:], strict=False):
        if offset + count > next_offset:
            raise unreadable(
                path,
                f"{len(chunks)} strips or tiles share bytes (several point at offset {next_offset}): "
                "the file is damaged or crafted",
            )


def _volume_shape(shape: tuple[int, ...], axes: str, path: Path) -> tuple[int, int, int]:
    """The 3D shape of a grayscale stack: singleton axes dropped; colour, channels or 4D refused."""
    kept = [(n, a) for n, a in zip(shape, axes, strict=True) if n > 1]
    kept_axes = "".join(a for _, a in kept)
    if "S" in kept_axes:
        raise unreadable(path, f"it is a colour (RGB) image (axes {axes}, shape {shape}); give a grey stack")
    if "C" in kept_axes:
        n_channels = dict((a, n) for n, a in kept)["C"]
        raise unreadable(path, f"it has {n_channels} channels; give a single-channel 3D stack")
    if len(kept) != 3:
        what = f"is a {len(kept)}D image" if len(kept) < 3 else f"has {len(kept)} dimensions"
        raise unreadable(path, f"it {what} (axes {axes}, shape {shape}); give a single 3D volume")
    return tuple(n for n, _ in kept)  # type: ignore[return-value]


Geometry = tuple[tuple[float, float, float], tuple[float, float, float], str | None, str]
"""(spacing (z, y, x) mm, origin (z, y, x) mm, the unit the file names, what had to be assumed or '')."""


def _mm_per(unit: Any) -> float | None:
    if not isinstance(unit, str):
        return None
    name = unit.strip().lower().replace("\\u00b5", "µ").replace("μ", "µ")  # ImageJ escapes µ; Greek mu
    return MM_PER_UNIT.get(name)


def _imagej_geometry(tif: tifffile.TiffFile) -> Geometry:
    """ImageJ keeps z in 'spacing', x/y as pixels per unit in X/YResolution, all in 'unit'.

    Its origin is in pixels: position = (index - origin) * size.
    """
    info = tif.imagej_metadata or {}
    unit = info.get("unit")
    tags = tif.pages[0].tags
    sizes = {"z": _positive(info.get("spacing"))}
    for letter, tag in (("y", "YResolution"), ("x", "XResolution")):
        value = tags[tag].value if tag in tags else None
        sizes[letter] = _positive(value[1] / value[0]) if value and value[0] else None
    missing = [f"{a} spacing" for a in "zyx" if sizes[a] is None]
    mm_per_unit = _mm_per(unit)
    if mm_per_unit is None:
        missing.append("no unit" if unit is None else f"unit {unit!r} unknown")
    spacing = tuple(sizes[a] * (mm_per_unit or 1.0) if sizes[a] else 1.0 for a in "zyx")
    origin = tuple(-(_finite(info.get(f"{a}origin")) or 0.0) * s for a, s in zip("zyx", spacing, strict=True))
    return spacing, origin, unit, ", ".join(missing)  # type: ignore[return-value]


def _ome_geometry(tif: tifffile.TiffFile) -> Geometry:
    """OME keeps PhysicalSize{X,Y,Z} (+Unit, default µm) on Pixels and positions on each Plane."""
    root = ElementTree.fromstring(tif.ome_metadata or "<OME/>")
    pixels = next((e for e in root.iter() if _local_name(e) == "Pixels"), None)
    if pixels is None:
        return (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None, "no Pixels element in the OME metadata"
    plane = next((e for e in pixels if _local_name(e) == "Plane" and e.get("TheZ", "0") == "0"), None)
    plane_attributes = {} if plane is None else plane.attrib
    spacing, origin, units, missing = [], [], set(), []
    for letter in "ZYX":
        unit = pixels.get(f"PhysicalSize{letter}Unit", OME_DEFAULT_LENGTH_UNIT)
        size, mm_per_unit = _positive(pixels.get(f"PhysicalSize{letter}")), _mm_per(unit)
        if size is None or mm_per_unit is None:
            missing.append(f"{letter.lower()} spacing" if size is None else f"unit {unit!r} unknown")
        spacing.append(size * mm_per_unit if size and mm_per_unit else 1.0)
        units.add(unit)
        # A position without a unit is in the stage's "reference frame", which is not a length: ignored.
        position = _finite(plane_attributes.get(f"Position{letter}"))
        position_scale = _mm_per(plane_attributes.get(f"Position{letter}Unit"))
        origin.append(position * position_scale if position is not None and position_scale else 0.0)
    geometry = tuple(spacing), tuple(origin), ",".join(sorted(units)), ", ".join(missing)
    return geometry  # type: ignore[return-value]


def _declared_slice_axis(tif: tifffile.TiffFile, flavour: str) -> str | None:
    """The through-plane axis this package recorded: an ImageJ key, or `key=axis` in the OME Image Description."""
    if flavour == "imagej":
        return (tif.imagej_metadata or {}).get(SLICE_AXIS_KEY)
    if flavour == "ome":
        root = ElementTree.fromstring(tif.ome_metadata or "<OME/>")
        for element in root.iter():
            text = (element.text or "").strip()
            if _local_name(element) == "Description" and text.startswith(f"{SLICE_AXIS_KEY}="):
                return text.split("=", 1)[1]
    return None


def _no_geometry(tif: tifffile.TiffFile) -> Geometry:
    return (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None, "no ImageJ or OME metadata"


def _local_name(element: ElementTree.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _positive(value: Any) -> float | None:
    number = _finite(value)
    return number if number is not None and number > 0 else None


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
