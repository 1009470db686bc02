"""Hostile destinations for the CLI and the napari writers: a read-only folder, the input itself under
another name, a full disk. Each gives one clear error and leaves no partial file; a previous output at the
destination and every input stay byte for byte as they were.

`write_volume`/`write_atomically` themselves are unit-tested in tests/test_io_atomic.py (temporary names,
modes, symlinks, a real read-only folder for non-root users); here the same failures are driven through the
surfaces a user touches.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

import napari_cycleinr.io.atomic as atomic
from napari_cycleinr._reader import read_files
from napari_cycleinr._writer import write_layers_to_folder, write_nifti, write_tiff
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import nifti, tiff
from tests.robust.surfaces import run_cli

pytestmark = pytest.mark.usefixtures("untouched")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def source(bad_paths, tmp_path):
    """A private copy of a small valid scan (5 mm slices), so links to it can be made beside it."""
    path = tmp_path / "in" / "scan 5mm.nii.gz"
    path.parent.mkdir()
    shutil.copyfile(bad_paths["uint8"], path)
    return path


@pytest.fixture
def layer(bad_paths):
    """What napari hands a writer for a layer opened from a file: (data, meta)."""
    ((data, meta, _),) = read_files(bad_paths["uint8"])
    return data, meta


def upsample(source: Path, target: Path, *extra: object):
    return run_cli("upsample", source, "-o", target, "--factor", "2", "--method", "trilinear", *extra)


# --- a read-only folder -------------------------------------------------------------------------------


@pytest.fixture
def locked(tmp_path, monkeypatch):
    """A folder nothing can be created in. As root, permissions do not stop writes, so creating files in it
    fails the way the kernel fails it for a read-only folder (EACCES from open); otherwise it is chmod 555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.name == "posix" and os.geteuid() != 0:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
        yield folder
        folder.chmod(stat.S_IRWXU)
        return
    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if Path(os.fsdecode(path)).parent == folder and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    yield folder


@pytest.mark.parametrize("name", ["sr.nii.gz", "sr.tif"])
def test_cli_into_a_read_only_folder(source, locked, name):
    result = upsample(source, locked / name, "-q")
    line = result.error_line
    assert f"cannot write {locked / name}: Permission denied" in line
    assert listing(locked) == []


def test_napari_writers_into_a_read_only_folder(layer, locked):
    data, meta = layer
    for write, name in ((write_nifti, "sr.nii"), (write_tiff, "sr.tiff")):
        with pytest.raises(CycleINRError, match=f"cannot write .*{name}: Permission denied"):
            write(str(locked / name), data, meta)
    with pytest.raises(CycleINRError, match="Permission denied"):
        write_layers_to_folder(str(locked), [(data, meta, "image")])
    assert listing(locked) == []


# --- the output is the input under another name -------------------------------------------------------


def spellings(source: Path) -> dict[str, Path]:
    (source.parent / "sub").mkdir(exist_ok=True)
    symlink = source.parent / "link to scan.nii.gz"
    symlink.symlink_to(source)
    hard = source.parent / "hard link.nii.gz"
    os.link(source, hard)
    return {
        "same path": source,
        "dot-dot": source.parent / "sub" / ".." / source.name,
        "relative": Path(os.path.relpath(source)),
        "symlink": symlink,
        "hard link": hard,
    }


def test_cli_never_writes_over_its_input(source):
    before = digest(source)
    for label, target in spellings(source).items():
        files = listing(source.parent)
        result = upsample(source, target)
        line = result.error_line
        assert "choose another output path" in line, (label, line)
        assert digest(source) == before, label
        assert listing(source.parent) == files, label


def test_napari_writer_never_writes_over_the_layers_source(source):
    ((data, meta, _),) = read_files(source)
    before = digest(source)
    for label, target in spellings(source).items():
        with pytest.raises(CycleINRError, match="refusing to overwrite .* it is an input of this run"):
            write_nifti(str(target), data, meta)
        assert digest(source) == before, label


# --- a full disk --------------------------------------------------------------------------------------


def partial_then_full(real_save):
    """A format writer that gets part of the file onto the disk and then finds it full."""

    def save(volume, path):
        real_save(volume, path)
        with open(path, "r+b") as file:
            file.truncate(max(1, path.stat().st_size // 3))
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def full_at_fsync(descriptor):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(("name", "module"), [("sr.nii.gz", nifti), ("sr.tif", tiff)])
@pytest.mark.parametrize("where", ["while writing", "at fsync"])
def test_cli_on_a_full_disk_keeps_the_previous_output(source, tmp_path, monkeypatch, name, module, where):
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / name
    assert upsample(source, target, "-q").code == 0
    previous = digest(target)
    if where == "while writing":
        monkeypatch.setattr(module, "save", partial_then_full(module.save))
    else:
        monkeypatch.setattr(atomic.os, "fsync", full_at_fsync)
    result = upsample(source, target, "--factor", "3", "-q")
    assert f"cannot write {target}: No space left on device" in result.error_line
    assert digest(target) == previous, "the previous output was damaged"
    assert listing(folder) == [name], "a partial temporary file was left"


def test_napari_writers_on_a_full_disk(layer, tmp_path, monkeypatch):
    data, meta = layer
    monkeypatch.setattr(nifti, "save", partial_then_full(nifti.save))
    monkeypatch.setattr(tiff, "save", partial_then_full(tiff.save))
    for write, name in ((write_nifti, "sr.nii.gz"), (write_tiff, "sr.tif")):
        with pytest.raises(CycleINRError, match=f"cannot write .*{name}: No space left on device"):
            write(str(tmp_path / name), data, meta)
    assert listing(tmp_path) == []


def test_cli_interrupted_while_writing_keeps_the_previous_output(source, tmp_path, monkeypatch):
    target = tmp_path / "sr.nii"
    assert upsample(source, target, "-q").code == 0
    previous = digest(target)

    def interrupted(volume, path):
        path.write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(nifti, "save", interrupted)
    result = upsample(source, target, "-q")
    assert result.code == 130 and "interrupted; nothing was written" in result.stderr
    assert digest(target) == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "sr.nii"]


# --- other impossible destinations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        ("missing folder/sr.nii.gz", r"cannot write .*sr\.nii\.gz: folder .*missing folder does not exist"),
        ("a folder.nii.gz", r"cannot write .*a folder\.nii\.gz: it is a folder"),
        ("sr.png", r"cannot write sr\.png: use \.nii, \.nii\.gz, \.tif or \.tiff"),
        ("sr.nii.bak", r"cannot write sr\.nii\.bak"),
    ],
)
def test_cli_refuses_impossible_destinations(source, tmp_path, target, pattern):
    (tmp_path / "a folder.nii.gz").mkdir()
    files = listing(tmp_path)
    result = upsample(source, tmp_path / target, "-q")
    line = result.error_line
    assert re.search(pattern, line), line
    assert listing(tmp_path) == files


def test_check_destination_finds_every_refusal_before_a_run(source, locked, tmp_path):
    """The pre-flight check the CLI needs (see the expected failure below): same refusals as the write."""
    (tmp_path / "a folder.nii.gz").mkdir()
    for target, pattern in (
        (locked / "sr.nii.gz", "Permission denied"),
        (tmp_path / "missing folder" / "sr.nii.gz", "does not exist"),
        (tmp_path / "a folder.nii.gz", "it is a folder"),
        (source.parent / "link.nii.gz", "it is an input of this run"),
    ):
        if target.name == "link.nii.gz":
            target.symlink_to(source)
        files = listing(tmp_path)
        with pytest.raises(CycleINRError, match=pattern):
            atomic.check_destination(target, refuse=[source])
        assert listing(tmp_path) == files
    assert atomic.check_destination(tmp_path / "fine.nii.gz", refuse=[source]) == tmp_path / "fine.nii.gz"
    assert not (tmp_path / "fine.nii.gz").exists() and not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("kind", ["read-only folder", "missing folder", "folder"])
def test_cli_refuses_a_bad_destination_before_running(source, locked, tmp_path, monkeypatch, kind):
    import napari_cycleinr.model.infer as infer

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model ran although the output could never be written")

    monkeypatch.setattr(infer, "super_resolve", must_not_run)
    (tmp_path / "a folder.nii.gz").mkdir()
    target = {
        "read-only folder": locked / "sr.nii.gz",
        "missing folder": tmp_path / "missing" / "sr.nii.gz",
        "folder": tmp_path / "a folder.nii.gz",
    }[kind]
    assert "cannot write" in upsample(source, target).error_line  # without -q: no progress line either


def test_cli_out_of_memory_is_one_line(source, tmp_path, monkeypatch):
    import torch

    import napari_cycleinr.model.infer as infer

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(infer, "super_resolve", out_of_memory)
    result = upsample(source, tmp_path / "sr.nii.gz")
    assert "memory" in result.error_line
    assert list(tmp_path.glob("sr*")) == []
