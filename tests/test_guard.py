"""The one output guard (io/guard.py): inputs, references, packaged files, folders, FIFOs and symlink loops
are refused with one line, before anything is written, and nothing on disk changes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_cycleinr._layers import REFERENCE_PATH_KEY, volume_to_layer_data
from napari_cycleinr._writer import write_layers_to_folder, write_nifti, write_tiff
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume, write_volume
from napari_cycleinr.io.guard import PACKAGE_ROOT, file_kind, guard_output, make_folder, write_guarded
from napari_cycleinr.model.checkpoint import bundled_model_path
from napari_cycleinr.volume import Volume

DATA = Path(__file__).parent / "data"
CT_3MM = DATA / "ct_totalseg_sm_122x101x30_3mm.nii.gz"
SAMPLE = PACKAGE_ROOT / "sample_data" / "chest_ct_5mm.nii.gz"


def snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    """Every file under the roots with its size and content hash (symlinks by their target)."""
    files = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_symlink():
                files[str(path)] = (0, os.readlink(path))
            elif path.is_file():
                files[str(path)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return files


def small_volume() -> Volume:
    return Volume.from_spacing(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), (3.0, 1.0, 1.0))


@pytest.fixture
def scan(tmp_path) -> Path:
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(CT_3MM.read_bytes())
    return path


def test_symlinks_to_an_input_are_seen_as_the_input(scan, tmp_path):
    (tmp_path / "link.nii.gz").symlink_to(scan)
    (tmp_path / "linked folder").symlink_to(tmp_path)
    before = snapshot(tmp_path)
    for target in (tmp_path / "link.nii.gz", tmp_path / "linked folder" / "scan.nii.gz"):
        with pytest.raises(CycleINRError, match="refusing to overwrite .*scan.nii.gz: it is an input"):
            write_volume(small_volume(), target, refuse=[scan])
        with pytest.raises(CycleINRError, match="it is an input"):
            write_guarded(target, lambda tmp: tmp.write_text("{}"), protected=[None, scan])
    assert snapshot(tmp_path) == before


def test_symlink_loops_are_named_as_such_for_outputs_and_inputs(tmp_path):
    (tmp_path / "a.nii.gz").symlink_to(tmp_path / "b.nii.gz")
    (tmp_path / "b.nii.gz").symlink_to(tmp_path / "a.nii.gz")
    (tmp_path / "self.tif").symlink_to(tmp_path / "self.tif")
    before = snapshot(tmp_path)
    for path in (tmp_path / "a.nii.gz", tmp_path / "self.tif"):
        assert file_kind(path) == "a symlink loop"
        with pytest.raises(CycleINRError, match="symlink loop"):
            write_volume(small_volume(), path)
        with pytest.raises(CycleINRError, match="symlink loop"):
            read_volume(path)
    with pytest.raises(CycleINRError, match="symlink loop"):
        guard_output(tmp_path / "a.nii.gz" / "inside", kind="folder")
    assert snapshot(tmp_path) == before


def test_a_fifo_is_named_a_fifo_and_never_opened(tmp_path):
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    def read() -> None:
        with pytest.raises(CycleINRError) as caught:
            read_volume(fifo)
        outcome.append(caught.value)

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert "is a FIFO (named pipe), not a file" in str(outcome[0])
    with pytest.raises(CycleINRError, match="it is a FIFO"):
        write_volume(small_volume(), fifo)
    assert file_kind(fifo) == "a FIFO (named pipe)" and file_kind("/dev/null") == "a character device"
    with pytest.raises(CycleINRError, match="character device"):
        guard_output("/dev/null")


def test_folders_and_files_in_the_wrong_place(tmp_path, scan):
    (tmp_path / "taken.json").mkdir()
    with pytest.raises(CycleINRError, match="it is a folder; give a file name"):
        write_guarded(tmp_path / "taken.json", lambda tmp: tmp.write_text("{}"))
    with pytest.raises(CycleINRError, match="cannot use .*scan.nii.gz as a folder: it is a file"):
        make_folder(scan)
    with pytest.raises(CycleINRError, match="scan.nii.gz is a file"):
        make_folder(scan / "run")
    with pytest.raises(CycleINRError, match="folder .*missing does not exist"):
        guard_output(tmp_path / "missing" / "plot.png")
    with pytest.raises(CycleINRError, match="folder .*scan.nii.gz is a file, not a folder"):
        guard_output(scan / "plot.png")
    made = make_folder(tmp_path / "new" / "run")
    assert made.is_dir() and guard_output(made, kind="folder") == made


def test_packaged_files_are_never_written(tmp_path):
    weights = bundled_model_path("mixed")
    before = snapshot(PACKAGE_ROOT / "weights", PACKAGE_ROOT / "sample_data")
    (tmp_path / "weights").symlink_to(weights.parent)
    for target in (weights, SAMPLE, tmp_path / "weights" / "new.json", PACKAGE_ROOT / "manifest.json"):
        with pytest.raises(CycleINRError, match="inside the installed napari_cycleinr package"):
            write_guarded(target, lambda tmp: tmp.write_text("{}"))
    with pytest.raises(CycleINRError, match="inside the installed napari_cycleinr package"):
        write_volume(read_volume(SAMPLE), tmp_path / "weights" / "x.nii.gz")
    with pytest.raises(CycleINRError, match="inside the installed"):
        make_folder(PACKAGE_ROOT / "runs")
    assert not (PACKAGE_ROOT / "runs").exists()
    assert snapshot(PACKAGE_ROOT / "weights", PACKAGE_ROOT / "sample_data") == before


def test_overwrite_false_and_a_probe_that_leaves_nothing(tmp_path, scan):
    existing = tmp_path / "out.json"
    existing.write_text("old")
    with pytest.raises(CycleINRError, match="already exists"):
        guard_output(existing, overwrite=False)
    assert guard_output(tmp_path / "fresh.json", probe=True) == tmp_path / "fresh.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "scan.nii.gz"]
    write_guarded(existing, lambda tmp: tmp.write_text("new"), protected=[scan])
    assert existing.read_text() == "new"


def test_the_napari_writers_refuse_the_layers_reference(tmp_path, scan):
    """napari #23 item 1: after a run with a reference, saving the result over the reference is refused."""
    reference = tmp_path / "reference.nii.gz"
    reference.write_bytes(CT_3MM.read_bytes())
    volume = read_volume(scan)
    result = volume.replace(metadata={**volume.metadata, REFERENCE_PATH_KEY: str(reference)})
    sr_data, sr_meta = volume_to_layer_data(result, name="sr", role="super_resolved")
    before = snapshot(tmp_path)
    (tmp_path / "ref link.tif").symlink_to(reference)
    link = tmp_path / "ref link.tif"
    for target, writer in ((reference, write_nifti), (scan, write_nifti), (link, write_tiff)):
        with pytest.raises(CycleINRError, match="it is an input of this run"):
            writer(str(target), sr_data, sr_meta)
    with pytest.raises(CycleINRError, match="inside the installed"):
        write_nifti(str(SAMPLE), sr_data, sr_meta)
    (tmp_path / "ref link.tif").unlink()
    assert snapshot(tmp_path) == before
    (written,) = write_nifti(str(tmp_path / "sr.nii.gz"), sr_data, sr_meta)
    np.testing.assert_array_equal(read_volume(written).data, volume.data)


def test_the_folder_writer_refuses_the_package_and_files(tmp_path, scan):
    data, kwargs = volume_to_layer_data(read_volume(scan), name="scan")
    layers = [(data, kwargs, "image")]
    with pytest.raises(CycleINRError, match="inside the installed"):
        write_layers_to_folder(str(PACKAGE_ROOT / "sample_data" / "saved"), layers)
    (tmp_path / "notes").write_text("a file")
    with pytest.raises(CycleINRError, match="notes as a folder: it is a file"):
        write_layers_to_folder(str(tmp_path / "notes"), layers)
    with pytest.raises(CycleINRError, match="notes as a folder: it is a file"):  # the suffix names the format
        write_layers_to_folder(str(tmp_path / "notes.tif"), layers)
    assert not (PACKAGE_ROOT / "sample_data" / "saved").exists()
    (written,) = write_layers_to_folder(str(tmp_path / "saved"), layers)
    assert Path(written).parent == tmp_path / "saved"


def test_a_volume_longer_than_nifti1_allows_is_written_as_nifti2(tmp_path):
    long = Volume.from_spacing(np.ones((40000, 2, 2), dtype=np.uint8), (0.01, 1.0, 1.0))
    written = write_volume(long, tmp_path / "long.nii")
    again = read_volume(written)
    assert again.shape == (40000, 2, 2) and again.spacing == pytest.approx((0.01, 1.0, 1.0))
    assert written.read_bytes()[:4] == (540).to_bytes(4, "little")  # NIfTI-2 header
