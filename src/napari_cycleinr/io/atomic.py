"""Writing files so that a crash, a full disk or a bad path never destroys data.

A file is written to a hidden temporary next to its destination, flushed to disk, then renamed over the
destination in one step (os.replace): readers see either the old file or the complete new one, never half.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import file_suffix

TEMPORARY_MARK = ".part"
"""Temporary files are '.<stem>.<random>.part<suffix>': hidden, recognisable, and with the real suffix so
nibabel still compresses a '.nii.gz'."""


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: by inode when both exist (hard links, case-insensitive disks), else
    by resolved path."""
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return os.path.normcase(Path(a).resolve()) == os.path.normcase(Path(b).resolve())


def prepare_destination(
    path: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
    refuse: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = True,
) -> Path:
    """The resolved destination, after refusing every write that would lose data or cannot succeed.

    Resolving first means writing through a symlink replaces its target, and comparisons see the real file.
    """
    destination = Path(os.fspath(path)).expanduser().resolve()
    if not destination.parent.is_dir():
        raise CycleINRError(f"cannot write {destination}: folder {destination.parent} does not exist")
    if destination.is_dir():
        raise CycleINRError(f"cannot write {destination}: it is a folder")
    protected = ([source] if source else []) + list(refuse)
    for input_path in protected:
        if same_file(destination, input_path):
            raise CycleINRError(
                f"refusing to overwrite {destination}: it is an input of this run; choose another output path"
            )
    if not overwrite and destination.exists():
        raise CycleINRError(f"{destination} already exists; choose another output path or allow overwriting")
    return destination


def check_destination(
    path: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
    refuse: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = True,
) -> Path:
    """Everything `write_volume` will refuse, checked before a long run rather than after it.

    `prepare_destination`'s refusals, then a real probe: the hidden temporary is created (O_EXCL) and removed
    again: the only reliable test of a read-only folder or file system (permissions do not stop root).
    """
    destination = prepare_destination(path, source=source, refuse=refuse, overwrite=overwrite)
    probe = _temporary_name(destination)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        raise _cannot_write(destination, error) from error
    with contextlib.suppress(OSError):
        probe.unlink()
    return destination


def _temporary_name(destination: Path) -> Path:
    suffix = file_suffix(destination) or destination.suffix.lower()
    stem = destination.name[: len(destination.name) - len(suffix)]
    return destination.with_name(f".{stem}.{secrets.token_hex(4)}{TEMPORARY_MARK}{suffix}")


def write_atomically(destination: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary_path)`, then move the finished file onto `destination` in one step.

    On any failure the temporary file is removed and a previous file at `destination` stays as it was;
    OSErrors (permissions, full disk) become CycleINRErrors with the system's reason.
    """
    temporary = _temporary_name(destination)
    try:
        # O_EXCL: never reuse someone else's file; mode 0o666 lets the umask decide, as for any new file.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        raise _cannot_write(destination, error) from error
    try:
        if destination.exists():
            shutil.copymode(destination, temporary)
        write(temporary)
        _fsync(temporary, os.O_RDWR)
        os.replace(temporary, destination)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, OSError):
            raise _cannot_write(destination, error) from error
        raise
    with contextlib.suppress(OSError, AttributeError):
        _fsync(destination.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))  # make the rename durable
    return destination


def _fsync(path: Path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _cannot_write(destination: Path, error: OSError) -> CycleINRError:
    reason = error.strerror or str(error) or type(error).__name__
    return CycleINRError(f"cannot write {destination}: {reason}")
