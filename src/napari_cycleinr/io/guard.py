"""One guard for every path this package writes: outputs, sidecars, JSON, plots, checkpoints, run folders.

`guard_output` resolves symlinks first (so a link to a scan is seen as the scan) and refuses, with one line,
every write that would lose data or cannot succeed: a path that is one of the run's inputs (scan, reference,
model being read, training or validation scan), anything inside the installed package (bundled weights,
samples, manifest), a folder where a file is expected (or a file where a folder is), a FIFO, socket or device,
a symlink loop, a missing parent folder. `write_guarded` is the guard followed by the atomic write of
io/atomic.py: the one way a file is written.

    from napari_cycleinr.io.guard import guard_output, write_guarded
    target = guard_output(args.output, protected=[args.input, args.reference], probe=True)  # before a run
    write_guarded(args.json, lambda tmp: tmp.write_text(text), protected=inputs)
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from napari_cycleinr.errors import CycleINRError

PathLike = str | os.PathLike[str]
Kind = Literal["file", "folder"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""The installed napari_cycleinr package: its weights, sample scans and manifest are never written over."""

PACKAGE_WRITES_VARIABLE = "CYCLEINR_WRITE_PACKAGE"
"""Set to 1 only by maintainer scripts that regenerate the bundled weights or samples (scripts/)."""

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(path: PathLike) -> str:
    """What is at `path`, in words: 'a file', 'a folder', 'a FIFO (named pipe)', ..., 'a symlink loop' or
    'nothing'. Never opens the path (opening a FIFO would block)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP or (os.path.islink(path) and _is_loop(Path(path))):
            return "a symlink loop"
        return "nothing"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return next((name for test, name in _SPECIAL_KINDS if test(mode)), "not a regular file")


def resolve_path(path: PathLike) -> Path:
    """`path` with ~ expanded and every symlink followed; a symlink loop is one clear error."""
    given = Path(os.fspath(path)).expanduser()
    try:
        resolved = given.resolve()
    except (RuntimeError, OSError) as error:  # Python 3.11 raises RuntimeError('Symlink loop from ...')
        raise CycleINRError(f"{given} is a symlink loop (its links point back at each other)") from error
    if resolved.is_symlink():  # newer Pythons return the loop unresolved instead of raising
        raise CycleINRError(f"{given} is a symlink loop (its links point back at each other)")
    return resolved


def guard_output(
    path: PathLike,
    *,
    protected: Iterable[PathLike | None] = (),
    kind: Kind = "file",
    overwrite: bool = True,
    probe: bool = False,
) -> Path:
    """The resolved path to write, after refusing every write that would lose data or cannot succeed.

    `protected`: the run's inputs (None entries are skipped); the package's own files are always protected.
    `kind='folder'` guards a folder the caller will create and fill (missing parents are allowed).
    `probe=True` (files) also creates and removes the hidden temporary the write will use: the only reliable
    test of a read-only folder or file system, done before a long run rather than after it.
    """
    destination = resolve_path(path)
    if kind == "folder":
        _check_folder(destination)
    else:
        _check_file(destination)
    for input_path in protected:  # first: 'an input of this run' says more than 'inside the package'
        if input_path is not None and str(input_path) and same_path(destination, input_path):
            raise CycleINRError(
                f"refusing to overwrite {destination}: it is an input of this run; choose another output path"
            )
    _check_not_packaged(destination)
    if not overwrite and os.path.lexists(destination):
        raise CycleINRError(f"{destination} already exists; choose another output path or allow overwriting")
    if probe and kind == "file":
        from napari_cycleinr.io.atomic import probe_folder

        probe_folder(destination)
    return destination


def write_guarded(
    path: PathLike,
    write: Callable[[Path], None],
    *,
    protected: Iterable[PathLike | None] = (),
    overwrite: bool = True,
) -> Path:
    """Guard `path`, then `write(temporary)` and move the finished file onto it in one step (io/atomic.py)."""
    from napari_cycleinr.io.atomic import write_atomically

    return write_atomically(guard_output(path, protected=protected, overwrite=overwrite), write)


def with_sidecar(path: PathLike | None) -> list[str]:
    """A checkpoint and the JSON copy of its header beside it (model.safetensors, model.json): the two files
    a run that reads the checkpoint must protect. [] for None or an empty path."""
    if path is None or not str(path):
        return []
    try:
        return [str(path), str(Path(os.fspath(path)).with_suffix(".json"))]
    except ValueError:  # '/', '.': no name to put a suffix on, and nothing a writer could hit
        return [str(path)]


def make_folder(path: PathLike, *, protected: Iterable[PathLike | None] = ()) -> Path:
    """Guard a run folder (kind='folder'), then create it and any missing parents."""
    folder = guard_output(path, protected=protected, kind="folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CycleINRError(f"cannot make the folder {folder}: {error.strerror or error}") from error
    return folder


def _check_file(destination: Path) -> None:
    what = file_kind(destination)
    if what == "a folder":
        raise CycleINRError(f"cannot write {destination}: it is a folder; give a file name")
    if what not in ("a file", "nothing"):
        raise CycleINRError(f"cannot write {destination}: it is {what}, not a regular file")
    parent = destination.parent
    if not parent.is_dir():
        reason = "is a file, not a folder" if parent.exists() else "does not exist"
        raise CycleINRError(f"cannot write {destination}: folder {parent} {reason}")


def _check_folder(destination: Path) -> None:
    what = file_kind(destination)
    if what not in ("a folder", "nothing"):
        raise CycleINRError(f"cannot use {destination} as a folder: it is {what}")
    ancestor = destination.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CycleINRError(f"cannot make the folder {destination}: {ancestor} is {file_kind(ancestor)}")


def _check_not_packaged(destination: Path) -> None:
    if os.environ.get(PACKAGE_WRITES_VARIABLE) == "1":  # maintainers regenerating the bundled files
        return
    if destination == PACKAGE_ROOT or destination.is_relative_to(PACKAGE_ROOT):
        raise CycleINRError(
            f"refusing to write {destination}: it is inside the installed napari_cycleinr package (its "
            "weights, sample scans and manifest); choose an output path outside it"
        )


def same_path(a: Path, b: PathLike) -> bool:
    """Whether two paths name one file or folder: by inode when both exist (hard links, case-insensitive
    disks), else by resolved path."""
    with contextlib.suppress(OSError, ValueError):
        return os.path.samefile(a, b)
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        return os.path.normcase(a) == os.path.normcase(Path(os.fspath(b)).expanduser().resolve())
    return False


def _is_loop(path: Path) -> bool:
    try:
        path.resolve()
    except (RuntimeError, OSError):
        return True
    return path.resolve().is_symlink()
