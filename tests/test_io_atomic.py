"""Atomic writes and write refusals: a failed or forbidden write never costs the user a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import SUPPORTED_SUFFIXES, is_supported, nifti, read_volume, tiff, write_volume
from napari_cycleinr.io.atomic import write_atomically
from napari_cycleinr.volume import Volume

MR = Path(__file__).parent / "data" / "mr_totalseg_sm_117x91x20_3mm.nii.gz"


def small_volume(value: float = 1.0) -> Volume:
    return Volume.from_spacing(np.full((3, 4, 5), value, np.float32), (2.0, 1.0, 1.0))


def test_supported_suffixes_are_matched_without_regard_to_case():
    assert set(SUPPORTED_SUFFIXES) == {".nii", ".nii.gz", ".tif", ".tiff"}
    for name in ("a.nii", "a.NII.GZ", "dir.x/b.Tif", "c.tiff", "d.ome.tif"):
        assert is_supported(name), name
    for name in ("a.gz", "a.nii.bz2", "a.png", "nii", "a.tif.bak", ""):
        assert not is_supported(name), name


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii", "out.tif", "out.tiff"])
def test_write_leaves_only_the_final_file(tmp_path, name):
    out = write_volume(small_volume(3.0), tmp_path / name)
    assert out == tmp_path / name
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert read_volume(out).data[2, 3, 4] == 3.0


@pytest.mark.parametrize(("module", "name"), [(nifti, "out.nii.gz"), (tiff, "out.tif")])
@pytest.mark.parametrize("failure", [RuntimeError("encoder crashed"), KeyboardInterrupt()])
def test_failed_write_keeps_the_previous_file_and_removes_the_temporary(
    tmp_path, monkeypatch, module, name, failure
):
    destination = write_volume(small_volume(1.0), tmp_path / name)
    before = destination.read_bytes()
    seen: list[Path] = []
    real_save = module.save

    def save_then_fail(volume, path):
        real_save(volume, path)  # a complete temporary file exists when the failure strikes
        seen.append(path)
        raise failure

    monkeypatch.setattr(module, "save", save_then_fail)
    with pytest.raises(type(failure)):
        write_volume(small_volume(2.0), destination)
    assert destination.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert seen[0].parent == tmp_path
    assert seen[0].name.startswith(".out.") and seen[0].name.endswith(".part" + name[3:])


def test_disk_errors_become_one_line_errors_and_clean_up(tmp_path):
    def fill_disk(path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(CycleINRError, match="cannot write .*out.nii: No space left on device"):
        write_atomically(tmp_path / "out.nii", fill_disk)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_the_volumes_own_source(tmp_path):
    source = write_volume(small_volume(), tmp_path / "scan.nii.gz")
    volume = read_volume(source)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    for spelling in (source, tmp_path / "sub" / ".." / "scan.nii.gz"):
        with pytest.raises(CycleINRError, match="refusing to overwrite"):
            write_volume(volume, spelling)
    os.link(source, tmp_path / "hard link.nii.gz")
    with pytest.raises(CycleINRError, match="refusing to overwrite"):
        write_volume(volume, tmp_path / "hard link.nii.gz")
    assert source.read_bytes() == before
    assert write_volume(volume, tmp_path / "scan_sr.nii.gz").exists()


def test_refuses_paths_listed_as_inputs(tmp_path):
    guarded = tmp_path / "input.tif"
    with pytest.raises(CycleINRError, match="refusing to overwrite"):
        write_volume(small_volume(), guarded, refuse=[tmp_path / "other.nii", str(guarded)])
    assert not guarded.exists()


def test_no_overwrite_keeps_an_existing_file(tmp_path):
    out = write_volume(small_volume(1.0), tmp_path / "out.nii")
    with pytest.raises(CycleINRError, match="already exists"):
        write_volume(small_volume(2.0), out, overwrite=False)
    assert read_volume(out).data[0, 0, 0] == 1.0
    write_volume(small_volume(2.0), out)
    assert read_volume(out).data[0, 0, 0] == 2.0


def test_bad_destinations_are_refused(tmp_path):
    with pytest.raises(CycleINRError, match="does not exist"):
        write_volume(small_volume(), tmp_path / "missing folder" / "out.nii")
    assert not (tmp_path / "missing folder").exists()
    (tmp_path / "taken.nii").mkdir()
    with pytest.raises(CycleINRError, match="is a folder"):
        write_volume(small_volume(), tmp_path / "taken.nii")
    with pytest.raises(CycleINRError, match="unsupported file type"):
        write_volume(small_volume(), tmp_path / "out.png")


def test_unwritable_folder_reports_the_reason(tmp_path, monkeypatch):
    def refuse_open(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse_open)
    with pytest.raises(CycleINRError, match="cannot write .*out.nii.gz: Permission denied"):
        write_volume(small_volume(), tmp_path / "out.nii.gz")


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user"
)
def test_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(CycleINRError, match="Permission denied"):
            write_volume(small_volume(), locked / "out.nii")
    finally:
        locked.chmod(stat.S_IRWXU)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_new_files_follow_the_umask_and_replacements_keep_the_mode(tmp_path):
    old_umask = os.umask(0o022)
    try:
        out = write_volume(small_volume(), tmp_path / "out.tif")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    out.chmod(0o600)
    write_volume(small_volume(2.0), out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_writing_through_a_symlink_replaces_its_target(tmp_path):
    target = write_volume(small_volume(1.0), tmp_path / "real.nii")
    link = tmp_path / "link.nii"
    link.symlink_to(target)
    assert write_volume(small_volume(5.0), link) == target
    assert link.is_symlink()
    assert read_volume(target).data[0, 0, 0] == 5.0


def test_real_file_to_non_ascii_folder_with_spaces(tmp_path):
    folder = tmp_path / "données patient 01 ñ"
    folder.mkdir()
    volume = read_volume(MR)
    with pytest.warns(UserWarning, match="flips are dropped"):  # the MR scan is LPS
        out = write_volume(volume, folder / "résultat x2.tif")
    assert [p.name for p in folder.iterdir()] == ["résultat x2.tif"]
    again = read_volume(out)
    np.testing.assert_array_equal(again.data, volume.data)
    np.testing.assert_allclose(again.spacing, volume.spacing)
