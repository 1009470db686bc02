"""Read and write volumes as NIfTI or TIFF without ever losing their geometry.

Every reader makes the array canonical, (z, y, x) with z the through-plane axis, and records how it did
so in `Volume.file_axes`; every writer undoes that, so a file read and written again keeps its layout and
its world coordinates. The format modules are imported only when a file is read or written, which keeps
`import napari_cycleinr.io` cheap; the helpers they share live here.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.intensity import guess_modality
from napari_cycleinr.volume import Volume

__all__ = ["SUPPORTED_SUFFIXES", "is_supported", "read_volume", "write_volume"]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".tif", ".tiff")
_FORMAT_BY_SUFFIX = {".nii.gz": "nifti", ".nii": "nifti", ".tif": "tiff", ".tiff": "tiff"}

MAX_VOXELS = 2**31
"""Beyond this, indices overflow in the model's int32 code paths; refuse before reading anything."""

_TIE_TOLERANCE = 1e-4
"""Spacings closer than this (relative) count as equal: float32 headers store 3.2 as 3.2000000477."""


def file_suffix(path: str | os.PathLike[str]) -> str:
    """The supported suffix of `path`, lower-case ('.nii.gz' counts as one), or '' if there is none."""
    name = Path(path).name.lower()
    return next((suffix for suffix in SUPPORTED_SUFFIXES if name.endswith(suffix)), "")


def is_supported(path: str | os.PathLike[str]) -> bool:
    """Whether the file name has a suffix this package reads and writes (case does not matter)."""
    return bool(file_suffix(path))


def read_volume(
    path: str | os.PathLike[str], axis: str | None = None, series: str | int | None = None
) -> Volume:
    """Read a NIfTI or TIFF file, or a DICOM series (a folder or one of its files), as a canonical Volume.

    `axis` ('x', 'y' or 'z', naming the file's own axes) picks the through-plane axis; by default it is the
    axis with the largest spacing, ties going to the file's slice axis (NIfTI k, TIFF axis 0). `series`
    (number, SeriesInstanceUID or key) picks one series of a DICOM folder that holds several.
    """
    from napari_cycleinr.io.guard import file_kind

    path = Path(os.fspath(path)).expanduser()
    if series is not None or _is_dicom(path):
        from napari_cycleinr.io.dicom import read_dicom

        return read_dicom(path, axis=axis, series=series)
    module = _format_module(path)
    kind = file_kind(path)  # never opens the path: opening a FIFO would wait forever
    if kind == "nothing":
        raise CycleINRError(f"no such file: {path}")
    if kind != "a file":
        raise CycleINRError(f"{path} is {kind}, not a file")
    return module.read(path, axis)


def write_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    refuse: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write `volume` atomically to `path` (format chosen by suffix) and return the path written.

    Never writes over the volume's own source file nor over any path in `refuse` (the inputs of a run), and
    leaves any previous file at `path` untouched when writing fails.
    """
    from napari_cycleinr.io.guard import write_guarded

    destination = Path(os.fspath(path)).expanduser()
    module = _format_module(destination)
    protected = [volume.metadata.get("source_path"), *refuse]

    def save(temporary: Path) -> None:
        try:
            module.save(volume, temporary)
        except CycleINRError:
            raise
        except ValueError as error:  # nibabel/tifffile refusing what they were given: one line naming it
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            raise CycleINRError(f"cannot write {destination.name}: {reason}") from error

    return write_guarded(destination, save, protected=protected, overwrite=overwrite)


def _is_dicom(path: Path) -> bool:
    """A folder (DICOM series are folders), or a file that starts like DICOM; not when named like NIfTI/TIFF."""
    from napari_cycleinr.io.dicom.frames import is_dicom_file

    return not file_suffix(path) and (path.is_dir() or (path.is_file() and is_dicom_file(path)))


def _format_module(path: Path) -> ModuleType:
    suffix = file_suffix(path)
    if not suffix:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise CycleINRError(f"{path.name}: unsupported file type; use one of {supported}")
    if _FORMAT_BY_SUFFIX[suffix] == "nifti":
        from napari_cycleinr.io import nifti

        return nifti
    from napari_cycleinr.io import tiff

    return tiff


# --- helpers shared by the format modules -------------------------------------------------------------


_LIBRARY_FAILURES = (
    AssertionError, AttributeError, IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError,
    RecursionError, RuntimeError, struct.error, zlib.error,
)  # fmt: skip
"""What a parsing library raises when a damaged file breaks its assumptions: the file's fault, not ours."""


def unreadable(path: Path, reason: object) -> CycleINRError:
    """The one error a bad file produces: its path and a short reason, never a library traceback."""
    if isinstance(reason, CycleINRError):
        reason = str(reason)
    elif isinstance(reason, BaseException):
        name = type(reason).__name__
        text = " ".join(str(reason).split())[:300] or name  # one line, whatever the library wrote
        detail = f"{text} ({name})" if name not in text else text
        if isinstance(reason, _LIBRARY_FAILURES):
            detail = f"the file is damaged: its reader failed with {detail}"
        reason = detail
    return CycleINRError(f"cannot read {path}: {reason}")


@contextlib.contextmanager
def library_errors(path: Path) -> Iterator[None]:
    """Turn whatever a parsing library raises on a damaged file into a CycleINRError naming the file.

    Wrap only calls into nibabel/tifffile: a malformed file can make them raise almost any exception type.
    """
    try:
        yield
    except CycleINRError:
        raise
    except MemoryError as error:
        raise unreadable(path, "not enough memory to hold the volume") from error
    except Exception as error:
        raise unreadable(path, error) from error


def check_voxel_dtype(dtype: np.dtype, path: Path) -> None:
    """Refuse value types a volume cannot hold, before any voxel is read."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise unreadable(path, f"complex voxels ({dtype}) are not supported; give a real-valued volume")
    if dtype.kind not in "biuf":
        raise unreadable(path, f"voxel type {dtype} is not a single grey value (RGB or structured data?)")


def available_memory_bytes() -> int | None:
    """Memory the system can give now: MemAvailable (counts reclaimable cache), else free pages, else None;
    a container's cgroup limit when it is lower (io/budget.py)."""
    from napari_cycleinr.io.budget import cgroup_available_bytes

    system = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            system = next((int(x.split()[1]) * 1024 for x in meminfo if x.startswith("MemAvailable:")), None)
    if system is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            system = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    limits = [n for n in (system, cgroup_available_bytes()) if n is not None]
    return min(limits) if limits else None


def check_fits_in_memory(shape: tuple[int, ...], itemsize: int, path: Path, extra_bytes: int = 0) -> None:
    """Refuse a header that claims an array too large to read, so a lying header cannot exhaust memory:
    `itemsize` bytes per voxel (all copies the reader makes) plus `extra_bytes`, in io/budget.py limits."""
    from napari_cycleinr.io.budget import check_affordable

    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    if voxels == 0:
        raise unreadable(path, f"the volume has no voxels (shape {tuple(shape)})")
    if voxels > MAX_VOXELS:
        raise unreadable(path, f"shape {tuple(shape)} has {voxels:,} voxels, more than {MAX_VOXELS:,}")
    check_affordable(voxels * int(itemsize) + int(extra_bytes), path, tuple(shape), available_memory_bytes())


def permutation_matrix(file_axes: tuple[int, ...]) -> np.ndarray:
    """4x4 P with file index = P @ canonical index, so canonical affine = file affine @ P."""
    p = np.zeros((4, 4))
    for canonical_axis, file_axis in enumerate(file_axes):
        p[file_axis, canonical_axis] = 1.0
    p[3, 3] = 1.0
    return p


def through_plane_file_axis(file_letters: str, spacing: tuple[float, ...], axis: str | None) -> int:
    """Which file axis becomes canonical z: the one named by `axis`, else the one with the largest spacing.

    Ties go to the file's own slice axis (letter 'z'), then to the first tied axis in storage order.
    """
    if axis is not None:
        name = str(axis).strip().lower()
        if name not in ("x", "y", "z"):
            raise CycleINRError(f"axis must be 'x', 'y' or 'z' (the file's axes), got {axis!r}")
        return file_letters.index(name)
    largest = max(spacing)
    tied = [i for i, s in enumerate(spacing) if s >= largest * (1.0 - _TIE_TOLERANCE)]
    slice_axis = file_letters.index("z")
    return slice_axis if slice_axis in tied else tied[0]


def canonical_volume(
    file_array: np.ndarray,
    file_affine: np.ndarray,
    file_letters: str,
    axis: str | None,
    metadata: dict[str, Any],
) -> Volume:
    """Transpose a file's array so z is the through-plane axis, keeping every voxel's world position.

    `file_letters` names the file's array axes ('xyz' for NIfTI i, j, k; 'zyx' for TIFF). The other two axes
    follow in z, y, x letter order, which is NIfTI's usual (k, j, i) and TIFF's own (z, y, x).
    """
    file_affine = np.asarray(file_affine, dtype=np.float64)
    spacing = tuple(float(v) for v in np.nan_to_num(np.linalg.norm(file_affine[:3, :3], axis=0)))
    through = through_plane_file_axis(file_letters, spacing, axis)
    others = sorted((i for i in range(3) if i != through), key=lambda i: "zyx".index(file_letters[i]))
    file_axes = (through, *others)
    data = np.transpose(file_array, file_axes)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    metadata = {**metadata, "dtype": str(data.dtype), "modality": guess_modality(data)}
    affine = file_affine @ permutation_matrix(file_axes)
    try:
        return Volume(data, affine, file_axes=file_axes, metadata=metadata)
    except CycleINRError as error:  # e.g. a NaN or singular affine: say which file
        raise unreadable(Path(metadata["source_path"]), error) from error


def file_layout(volume: Volume, file_axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The (array, affine) of `volume` stored with `file_axes`, the inverse of `canonical_volume`."""
    array = np.transpose(volume.data, np.argsort(file_axes))
    return array, volume.affine @ permutation_matrix(file_axes).T


def storable(array: np.ndarray) -> np.ndarray:
    """The array in a value type both formats store: bool -> uint8, float16 -> float32, complex refused."""
    if array.dtype.kind not in "biuf":
        raise CycleINRError(f"voxels of type {array.dtype} cannot be written; give a real-valued volume")
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array
