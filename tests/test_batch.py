"""Folders of scans: every readable scan processed, existing outputs skipped (resume), failures reported per
file without stopping, atomic outputs, and the files split across torchrun ranks."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from napari_cycleinr.batch import process_folder
from napari_cycleinr.boundary import EXIT_INTERRUPTED, run_guarded
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.folder_scans import find_scans
from napari_cycleinr.io import read_volume
from tests.conftest import CT_3MM, CT_HEAD, MR_3MM

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for path in (CT_3MM, MR_3MM):
        shutil.copy(path, scans / path.name)
    (scans / "broken.nii.gz").write_bytes(b"not a scan at all")
    (scans / "notes.txt").write_text("not a scan either")
    (scans / ".hidden.nii.gz").write_bytes(b"ignored")
    return scans


def _quiet(line):
    pass


def test_every_scan_is_processed_and_a_bad_one_does_not_stop_the_rest(folder, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    report = process_folder(folder, out, factor=2, model=tiny_checkpoint, device="cpu", log=_quiet)
    assert report.count("done") == 2 and report.count("failed") == 1 and report.count("skipped") == 0
    assert [Path(f["source"]).name for f in report.failed] == ["broken.nii.gz"]
    assert report.failed[0]["message"]  # one line saying why
    assert [p.name for p in report.ignored] == ["notes.txt"]
    assert sorted(p.name for p in out.iterdir()) == sorted([CT_3MM.name, MR_3MM.name])  # no temporaries
    for source in (CT_3MM, MR_3MM):
        original = read_volume(source)
        axis = "xyz"[original.file_axes[0]]  # read back along the same through-plane axis
        written = read_volume(out / source.name, axis=axis)
        assert written.shape == (2 * original.shape[0], *original.shape[1:])
    assert "2 written, 0 skipped (output exists), 1 failed" in report.summary()


def test_folders_take_the_exact_data_consistency_step(folder, tmp_path, tiny_checkpoint):
    from napari_cycleinr.model.consistency import ConsistencyOptions, consistency_residual

    out = tmp_path / "out"
    report = process_folder(
        folder, out, factor=3, model=tiny_checkpoint, device="cpu", consistency=ConsistencyOptions("skip"), log=_quiet
    )
    assert report.count("done") == 2
    for source in (CT_3MM, MR_3MM):
        original = read_volume(source)
        written = read_volume(out / source.name, axis="xyz"[original.file_axes[0]])
        assert consistency_residual(written.data, original.data, "skip").max <= 0.5 + 1e-3


def test_folders_add_the_noise_texture_to_each_scan(folder, tmp_path):
    plain, textured = tmp_path / "plain", tmp_path / "textured"
    for out, texture in ((plain, 0.0), (textured, 1.0)):
        report = process_folder(folder, out, factor=2, method="tricubic", texture=texture, log=_quiet)
        assert report.count("done") == 2
    for source in (CT_3MM, MR_3MM):
        axis = "xyz"[read_volume(source).file_axes[0]]
        a, b = (read_volume(out / source.name, axis=axis).data for out in (plain, textured))
        assert a.shape == b.shape and a.dtype == b.dtype and (a != b).any()


def test_a_rerun_skips_finished_outputs_and_resumes_after_a_crash(folder, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    calls = []

    def crash_in_second_file():  # cancel checks run inside each inference; fail once the 2nd scan starts
        calls.append(1)
        return (out / CT_3MM.name).exists()

    said = io.StringIO()
    code = run_guarded(lambda: process_folder(folder, out, factor=2, model=tiny_checkpoint, device="cpu",
                                              log=_quiet, cancel=crash_in_second_file), stderr=said)
    assert code == EXIT_INTERRUPTED  # and the line says what the stop kept, not "nothing was written"
    assert said.getvalue() == (
        f"cycleinr: cancelled; 1 scan was finished and written to {out}, the one in progress left nothing; "
        "run the same command again to go on (finished scans are skipped)\n"
    )
    finished = out / CT_3MM.name
    assert finished.exists() and not (out / MR_3MM.name).exists()
    assert [p.name for p in out.iterdir()] == [CT_3MM.name]  # the interrupted output left nothing behind
    stamp = finished.stat().st_mtime_ns
    (out / ".stale.nii.gz.part").write_bytes(b"left by a killed run")

    report = process_folder(folder, out, factor=2, model=tiny_checkpoint, device="cpu", log=_quiet)
    assert report.count("skipped") == 1 and report.count("done") == 1
    assert finished.stat().st_mtime_ns == stamp  # not redone
    again = process_folder(folder, out, factor=2, model=tiny_checkpoint, device="cpu", log=_quiet,
                           overwrite=True)
    assert again.count("done") == 2 and finished.stat().st_mtime_ns != stamp


def test_ranks_share_the_files_without_overlap(folder, tmp_path):
    shutil.copy(CT_HEAD, folder / CT_HEAD.name)
    out = tmp_path / "out"
    reports = [
        process_folder(folder, out, factor=2, method="trilinear", rank=r, world_size=2, log=_quiet)
        for r in range(2)
    ]
    processed = [[Path(f.source).name for f in report.results] for report in reports]
    scans, _ = find_scans(folder)
    assert sorted(sum(processed, [])) == sorted(scan.label for scan in scans)
    assert not set(processed[0]) & set(processed[1]) and all(processed)


def test_whole_run_errors_come_before_any_file(folder, tmp_path):
    with pytest.raises(CycleINRError, match="is not a folder"):
        process_folder(tmp_path / "missing", tmp_path / "out", factor=2)
    with pytest.raises(CycleINRError, match="input folder"):
        process_folder(folder, folder, factor=2)
    with pytest.raises(CycleINRError, match="names a folder"):
        process_folder(folder, tmp_path / "out.nii.gz", factor=2)
    with pytest.raises(CycleINRError, match="factor"):
        process_folder(folder, tmp_path / "out", factor=0.5)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def _cli(*args, torchrun=False):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if torchrun else []
    command = [sys.executable, *launcher, "-m", "napari_cycleinr.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_cli_folder_exit_codes_and_messages(folder, tmp_path):
    out = tmp_path / "out"
    result = _cli("upsample", folder, "-o", out, "--factor", "2", "--method", "trilinear")
    assert result.returncode == 1  # one file failed, the others were written
    assert "2 written, 0 skipped (output exists), 1 failed" in result.stderr
    assert "failed: broken.nii.gz" in result.stderr
    (folder / "broken.nii.gz").unlink()
    result = _cli("upsample", folder, "-o", out, "--factor", "2", "--method", "trilinear")
    assert result.returncode == 0 and "0 written, 2 skipped" in result.stdout
    result = _cli("upsample", folder, "-o", tmp_path / "x.nii.gz", "--factor", "2")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "names a folder" in result.stderr


def test_torchrun_splits_a_folder_across_two_ranks(folder, tmp_path):
    (folder / "broken.nii.gz").unlink()
    shutil.copy(CT_HEAD, folder / CT_HEAD.name)
    out = tmp_path / "out"
    result = _cli("upsample", folder, "-o", out, "--factor", "2", "--method", "trilinear", "--device", "cpu",
                  torchrun=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "[rank 0]" in result.stdout and "[rank 1]" in result.stdout
    assert "3 written, 0 skipped (output exists), 0 failed by 2 processes" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([CT_3MM.name, MR_3MM.name, CT_HEAD.name])


DICOM = ROOT / "tests" / "data" / "dicom"


@pytest.fixture
def study(tmp_path):
    """A study as it leaves the archive: one folder per DICOM series (one of them gantry-tilted, one missing
    a slice, which is refused), and a NIfTI beside them."""
    from tests.test_io_dicom_cases import write_series

    folder = tmp_path / "study"
    folder.mkdir()
    for series in ("ct_philips_2slices", "mr_sag_3slices", "ct_ge_tilt_2slices"):
        shutil.copytree(DICOM / series, folder / series)
    missing = [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 8.0, 10.0)]
    write_series(folder / "missing_slice", missing, series_uid="1.2.3.7")
    shutil.copy(CT_3MM, folder / CT_3MM.name)
    return folder


def test_a_study_folder_is_processed_series_by_series(study, tmp_path):
    out = tmp_path / "out"
    lines = []
    report = process_folder(study, out, factor=2, method="trilinear", log=lines.append)
    assert report.count("done") == 4 and report.count("failed") == 1
    (failed,) = report.failed
    assert failed["name"].startswith("series 3 ") and "not evenly spaced" in failed["message"]
    assert str(study) not in failed["message"]  # the log line names the series once, not twice
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CT_3MM.name, "series_202_STD_BRAIN_1MM_iDose.nii.gz", "series_5_SAG_MPRAGE_220_FOV.nii.gz",
         "series_2.nii.gz"]
    )
    for name, series in (("series_202_STD_BRAIN_1MM_iDose.nii.gz", "ct_philips_2slices"),
                         ("series_2.nii.gz", "ct_ge_tilt_2slices"),  # gantry tilt, corrected
                         ("series_5_SAG_MPRAGE_220_FOV.nii.gz", "mr_sag_3slices")):
        source, written = read_volume(study / series), read_volume(out / name)
        assert written.shape == (2 * source.shape[0], *source.shape[1:])
        assert written.spacing[0] == pytest.approx(source.spacing[0] / 2)
        assert written.spacing[1:] == pytest.approx(source.spacing[1:])
    assert any('series 5 "SAG MPRAGE 220 FOV"' in line for line in lines)
    again = process_folder(study, out, factor=2, method="trilinear", log=_quiet)
    assert again.count("skipped") == 4 and again.count("done") == 0  # resumable: the names are stable


def test_a_study_written_as_new_dicom_series(study, tmp_path):
    out = tmp_path / "out"
    report = process_folder(study, out, factor=2, method="trilinear", output_format="dicom", log=_quiet)
    assert report.count("done") == 4
    mr = read_volume(out / "series_5_SAG_MPRAGE_220_FOV")
    source = read_volume(study / "mr_sag_3slices")
    assert mr.shape == (6, *source.shape[1:]) and mr.metadata["modality"] == "MR"
    assert mr.metadata["dicom"]["SeriesDescription"] == "Trilinear 0.9->0.45 mm"  # not called the model's
    assert read_volume(out / CT_3MM.name.removesuffix(".nii.gz")).shape[0] == 60  # a NIfTI input too


def test_the_output_folder_may_not_lie_inside_a_dicom_folder(study):
    with pytest.raises(CycleINRError, match="inside the DICOM folder"):
        process_folder(study, study / "out", factor=2, method="trilinear", log=_quiet)
    assert not (study / "out").exists()


def test_cli_takes_a_study_folder_and_keeps_one_series_one_scan(study, tmp_path):
    result = _cli("upsample", study, "-o", tmp_path / "out", "--factor", "2", "--method", "trilinear")
    assert result.returncode == 1 and "4 written, 0 skipped (output exists), 1 failed" in result.stderr
    result = _cli("upsample", study, "-o", tmp_path / "tiff", "--factor", "2", "--method", "trilinear",
                  "--format", "tiff")
    assert sorted(p.name for p in (tmp_path / "tiff").iterdir()) == sorted(
        [CT_3MM.name, "series_202_STD_BRAIN_1MM_iDose.tif", "series_5_SAG_MPRAGE_220_FOV.tif", "series_2.tif"]
    )
    one = tmp_path / "one"
    shutil.copytree(DICOM / "ct_philips_2slices", one)
    result = _cli("upsample", one, "-o", tmp_path / "one.nii.gz", "--factor", "2", "--method", "trilinear")
    assert result.returncode == 0 and read_volume(tmp_path / "one.nii.gz").shape[0] == 4
    result = _cli("upsample", study, "-o", tmp_path / "x.nii.gz", "--factor", "2")  # one file out: pick one
    assert result.returncode == 2 and "--series" in result.stderr


def test_series_output_names_are_file_safe_and_tell_parts_apart():
    from napari_cycleinr.folder_scans import series_file_stem

    assert series_file_stem(202, "STD BRAIN 1MM, iDose", "202") == "series_202_STD_BRAIN_1MM_iDose"
    assert series_file_stem(5, "T2 / TSE", "5:echo=2") == "series_5_T2_TSE_echo_2"
    assert series_file_stem(None, "", "1.2.840.1") == "series_1_2_840_1"


def test_scans_already_at_the_target_spacing_are_left_out_not_failed(study, tmp_path):
    lines = []
    report = process_folder(study, tmp_path / "out", spacing=1.0, method="trilinear", log=lines.append)
    assert report.count("done") == 2 and report.count("fine") == 2 and report.count("failed") == 1  # missing
    assert "2 written, 0 skipped (output exists), 2 already at the target spacing, 1 failed" in report.summary()
    assert any("left out, its slices are 0.9 mm apart already" in line for line in lines)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([CT_3MM.name, "series_2.nii.gz"])


def test_a_cd_export_nesting_its_series_four_levels_down_is_a_study(tmp_path):
    export = tmp_path / "cd"
    for series in ("ct_philips_2slices", "mr_sag_3slices"):
        shutil.copytree(DICOM / series, export / "DICOM" / "PAT1" / "STUDY1" / series)
    report = process_folder(export, tmp_path / "out", factor=2, method="trilinear", log=_quiet)
    assert report.count("done") == 2 and report.count("failed") == 0
