"""Real DICOM series (tests/data/dicom, unchanged files from the sources in docs/dicom.md) against their
NIfTI twins, and derived series written back: pydicom, SimpleITK (when installed) and our reader agree."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume
from napari_cycleinr.io.dicom import check_series_destination, write_dicom_series
from napari_cycleinr.volume import resampled_z_affine

DICOM = Path(__file__).parent / "data" / "dicom"
PHILIPS, MR, GE = DICOM / "ct_philips_2slices", DICOM / "mr_sag_3slices", DICOM / "ct_ge_tilt_2slices"
TWINS = {PHILIPS: DICOM / "ct_philips_twin_crop.nii.gz", MR: DICOM / "mr_sag_twin_crop.nii.gz"}
"""NIfTI crops of the same scans (columns 100-147, rows 60-99 of the same slices), converted independently."""


def world(affine: np.ndarray, index) -> np.ndarray:
    return (np.asarray(affine) @ np.array([*index, 1.0]))[:3]


def test_test_data_stays_small():
    total = sum(p.stat().st_size for p in DICOM.rglob("*") if p.is_file())
    assert total < 3_000_000


@pytest.mark.parametrize("folder", [PHILIPS, MR], ids=["philips ct", "oblique sagittal mr"])
def test_real_series_match_their_nifti_twin_to_a_hundredth_of_a_mm(folder):
    volume = read_volume(folder)
    twin = read_volume(TWINS[folder])
    rows, columns = slice(60, 100), slice(100, 148)
    np.testing.assert_array_equal(volume.data[:, rows, columns], twin.data)
    assert volume.data.dtype == twin.data.dtype  # int16 HU for CT (intercept -1024), uint16 raw MR values
    for index in [(0, 0, 0), (1, 39, 47), (volume.shape[0] - 1, 5, 20)]:
        ours = world(volume.affine, (index[0], index[1] + 60, index[2] + 100))
        np.testing.assert_allclose(ours, world(twin.affine, index), atol=0.01)
    np.testing.assert_allclose(volume.spacing, twin.spacing, atol=1e-4)


def test_metadata_carries_thickness_spacing_and_identity():
    ct, mr = read_volume(PHILIPS), read_volume(MR)
    assert ct.metadata["slice_thickness_mm"] == 1.0 and ct.metadata["slice_spacing_mm"] == pytest.approx(1.0)
    assert mr.metadata["slice_thickness_mm"] == pytest.approx(0.9) and mr.metadata["modality"] == "MR"
    assert ct.metadata["format"] == "dicom" and ct.metadata["source_path"] == str(PHILIPS.resolve())
    identity = ct.metadata["dicom"]
    assert (
        identity["SeriesNumber"] == 202 and identity["Modality"] == "CT" and identity["first_instance"] == 51
    )
    assert identity["StudyInstanceUID"].startswith("1.3.46.670589.33.1.274927")
    assert identity["FrameOfReferenceUID"] and identity["PatientID"] == "PLASTIC"
    # the sagittal MR's slices advance along x (3 degrees off): its through-plane axis is x in patient terms
    direction = mr.affine[:3, 0] / np.linalg.norm(mr.affine[:3, 0])
    assert abs(direction[0]) > 0.99


def test_one_file_reads_its_whole_series(tmp_path):
    volume = read_volume(next(MR.iterdir()))
    assert volume.shape == (3, 256, 256)


def test_the_tilted_ge_series_is_read_on_the_grid_along_its_normal_not_sheared():
    volume = read_volume(GE)
    assert volume.metadata["dicom"]["gantry_tilt_corrected_degrees"] == pytest.approx(18.5, abs=0.05)
    assert volume.metadata["slice_spacing_mm"] == pytest.approx(4.0, abs=0.01)  # = SliceThickness: contiguous
    assert volume.shape == (2, 515, 512)  # the second slice lies 1.3 mm (2.6 rows) further along the rows
    assert volume.data.min() == -1500  # GE's padding outside the scan circle; also where no slice reaches


@pytest.mark.parametrize("folder", [PHILIPS, MR], ids=["ct", "mr"])
def test_round_trip_as_a_derived_series_keeps_values_geometry_and_study(tmp_path, folder):
    source = read_volume(folder)
    out = write_dicom_series(source, tmp_path / "derived", description="CycleINR test")
    back = read_volume(out)
    np.testing.assert_array_equal(back.data, source.data)
    np.testing.assert_allclose(back.affine, source.affine, atol=1e-6)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"IM{k:05d}.dcm" for k in range(1, len(files) + 1)]
    original = pydicom.dcmread(next(p for p in folder.iterdir()), stop_before_pixels=True)
    written = [pydicom.dcmread(f) for f in files]
    assert len({d.SOPInstanceUID for d in written}) == len(files)
    for ds in written:
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and ds.SeriesDescription == "CycleINR test"
        assert ds.SeriesInstanceUID != original.SeriesInstanceUID and ds.SOPClassUID == original.SOPClassUID
        for key in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
            assert ds[key].value == original[key].value
    assert float(written[0].SliceThickness) == pytest.approx(float(original.SliceThickness))
    assert written[0].SeriesNumber == original.SeriesNumber + 1000


def test_super_resolved_float_values_round_trip_within_half_a_rescale_step(tmp_path):
    source = read_volume(PHILIPS)
    values = np.repeat(source.data.astype(np.float32), 4, axis=0)[:, :64, :64] + 0.37
    record = {"spacing_in_mm": 1.0, "spacing_out_mm": 0.25}
    sr = source.replace(data=values, affine=resampled_z_affine(source.affine, 0.25))
    sr.metadata["super_resolution"] = record
    out = write_dicom_series(sr, tmp_path / "sr")
    back = read_volume(out)
    slope = float(pydicom.dcmread(next(out.iterdir())).RescaleSlope)
    assert back.data.dtype == np.float32 and np.max(np.abs(back.data - values)) <= slope / 2 + 1e-3
    np.testing.assert_allclose(back.affine, sr.affine, atol=1e-6)
    assert back.metadata["dicom"]["SeriesDescription"] == "CycleINR 1->0.25 mm"
    assert back.metadata["slice_thickness_mm"] == pytest.approx(0.25)  # the output grid's, not the source's


def test_a_nifti_volume_becomes_a_new_study_marked_as_placeholder(tmp_path):
    volume = read_volume(TWINS[MR])
    nifti = tmp_path / "scan.nii.gz"
    shutil.copy(TWINS[MR], nifti)
    volume = read_volume(nifti)
    out = write_dicom_series(volume, tmp_path / "from_nifti")  # next to its source file: allowed
    back = read_volume(out)
    np.testing.assert_array_equal(back.data, volume.data)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-6)
    ds = pydicom.dcmread(next(out.iterdir()))
    assert str(ds.PatientName) == "CYCLEINR^NO DICOM SOURCE" and "no DICOM source" in ds.StudyDescription


def test_written_series_reads_in_simpleitk_with_the_same_geometry(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    source = read_volume(MR)
    out = write_dicom_series(source, tmp_path / "mr")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out)))
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), source.data)
    for index in [(0, 0, 0), (2, 255, 17)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(tuple(int(i) for i in index[::-1])))
        np.testing.assert_allclose(lps * [-1, -1, 1], world(source.affine, index), atol=0.01)


def test_writes_are_atomic_and_never_touch_inputs(tmp_path, monkeypatch):
    source = read_volume(PHILIPS)
    with pytest.raises(CycleINRError, match="it holds an input of this run"):
        check_series_destination(source, PHILIPS / "inside")  # checked before a long run
    with pytest.raises(CycleINRError, match="it holds an input of this run"):
        write_dicom_series(source, PHILIPS)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(CycleINRError, match="it is not empty"):
        write_dicom_series(source, busy, overwrite=True)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

    calls = []

    def fail_on_second(self, filename, **kwargs):  # a disk that fills up after one file
        calls.append(filename)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original_save(self, filename, **kwargs)

    original_save = pydicom.dataset.Dataset.save_as
    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", fail_on_second)
    with pytest.raises(CycleINRError, match="No space left on device"):
        write_dicom_series(source, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no partial series, no hidden folder
    monkeypatch.undo()

    first = write_dicom_series(source, tmp_path / "out")
    again = write_dicom_series(source, tmp_path / "out", overwrite=True)  # replaces its own earlier series
    assert first == again and len(list(again.iterdir())) == 2
    with pytest.raises(CycleINRError, match="already holds a series"):
        write_dicom_series(source, tmp_path / "out")


def test_sheared_volumes_and_nan_values_are_refused(tmp_path):
    source = read_volume(PHILIPS)
    sheared = source.affine.copy()
    sheared[0, 0] = 0.3
    with pytest.raises(CycleINRError, match="has a shear"):
        write_dicom_series(source.replace(affine=sheared), tmp_path / "a")
    with pytest.raises(CycleINRError, match="NaN"):
        write_dicom_series(source.replace(data=np.full((2, 3, 3), np.nan, np.float32)), tmp_path / "b")
    assert not list(tmp_path.iterdir())
