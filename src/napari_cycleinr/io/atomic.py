"""Writing files so that a crash, a full disk or a bad path never destroys data.

A file is written to a hidden temporary next to its destination, flushed to disk, then renamed over the
destination in one step (os.replace): readers see either the old file or the complete new one, never half.
What may be written at all (not an input, not a packaged file, not a folder) is decided by io/guard.py;
`guard.write_guarded` is the guard followed by `write_atomically`.
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


def prepare_destination(
    path: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
    refuse: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = True,
) -> Path:
    """The resolved destination after the output guard's refusals (io/guard.py; kept for existing callers)."""
    from napari_cycleinr.io.guard import guard_output

    return guard_output(path, protected=[source, *refuse], overwrite=overwrite)


def check_destination(
    path: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str] | None = None,
    refuse: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = True,
) -> Path:
    """`prepare_destination` plus a real probe of the folder, before a long run rather than after it."""
    from napari_cycleinr.io.guard import guard_output

    return guard_output(path, protected=[source, *refuse], overwrite=overwrite, probe=True)


def probe_folder(destination: Path) -> None:
    """Create the hidden temporary a write will use (O_EXCL) and remove it again: the only reliable test of a
    read-only folder or file system (permissions do not stop root)."""
    probe = _temporary_name(destination)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        raise _cannot_write(destination, error) from error
    with contextlib.suppress(OSError):
        probe.unlink()


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
    created = False
    try:
        # O_EXCL: never reuse someone else's file; mode 0o666 lets the umask decide, as for any new file.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        created = True
        if destination.exists():
            shutil.copymode(destination, temporary)
        write(temporary)
        _fsync(temporary, os.O_RDWR)
        os.replace(temporary, destination)
    except BaseException as error:  # KeyboardInterrupt and SIGTERM (boundary.py) included: no .part is left
        if created:
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
