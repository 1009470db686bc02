"""DICOM hard cases, each on a real series written with pydicom: what is read, what is refused and how."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, generate_uid

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume
from napari_cycleinr.io.dicom import list_series, read_dicom

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ROWS, COLUMNS = 6, 5


def stored_values(k: int) -> np.ndarray:
    return (k * 100 + np.arange(ROWS * COLUMNS, dtype=np.uint16).reshape(ROWS, COLUMNS) * 3).astype(np.uint16)


def image(k: int, position, *, orientation=AXIAL, modality="CT", series_uid="1.2.3.4", study="1.2.3",
          slope=1, intercept=-1024, series_number=3, **fields) -> Dataset:  # fmt: skip
    """One classic CT/MR slice: 6 x 5 pixels, 0.7 x 0.8 mm, stored uint16 values from `stored_values`."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, study, series_uid
    ds.FrameOfReferenceUID, ds.SeriesNumber, ds.InstanceNumber = "1.2.3.9", series_number, k + 1
    ds.PatientName, ds.PatientID = "TEST^SYNTHETIC", "SYN1"
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [0.7, 0.8]
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored_values(k).tobytes()
    for key, value in fields.items():
        setattr(ds, key, value)
    return ds


def write_series(folder, positions, names=None, **kwargs) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, position in enumerate(positions):
        path = folder / (names[k] if names else f"slice{k:03d}.dcm")
        image(k, position, **kwargs).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def axial_positions(n=4, spacing=2.0, z0=30.0):
    return [(-10.0, -20.0, z0 + k * spacing) for k in range(n)]


def test_regular_series_sorted_by_position_not_by_name(tmp_path):
    names = ["b", "d", "a", "c"]  # file order and InstanceNumber say nothing about where a slice is
    write_series(tmp_path / "s", axial_positions()[::-1], names=names)
    volume = read_volume(tmp_path / "s")
    assert volume.shape == (4, ROWS, COLUMNS) and volume.data.dtype == np.int16
    np.testing.assert_array_equal(volume.data[0], stored_values(3).astype(np.int16) - 1024)  # lowest z
    expected = np.array([[0, 0, -0.8, 10.0], [0, -0.7, 0, 20.0], [2.0, 0, 0, 30.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-9)  # LPS -> RAS: x and y change sign
    assert volume.metadata["slice_spacing_mm"] == pytest.approx(2.0)
    assert volume.metadata["slice_thickness_mm"] == 2.0
    assert volume.metadata["modality"] == "CT"


@pytest.mark.parametrize(
    ("z", "said"),
    [
        ([0, 2, 4, 7, 9], "not evenly spaced (2.00 mm between slices 1-3, 3.00 mm between slices 3-4"),
        ([0, 2, 4, 8, 10], "not evenly spaced (2.00 mm between slices 1-3, 4.00 mm between slices 3-4"),
    ],
    ids=["uneven", "missing slice"],
)
def test_uneven_spacing_and_missing_slices_are_refused(tmp_path, z, said):
    write_series(tmp_path / "s", [(0.0, 0.0, float(v)) for v in z])
    with pytest.raises(CycleINRError, match="a missing slice or mixed slice spacings") as error:
        read_volume(tmp_path / "s")
    assert said in str(error.value)


def tilted_series(folder, spacings, tilt_degrees=15.0, size=(40, 30)):
    """Tilted planes whose centres move straight along z (as a tilted gantry writes them), each pixel holding
    a linear function of where it is (LPS mm), which the reader must find at the same place."""
    tilt = np.radians(tilt_degrees)
    row, column = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    folder.mkdir(parents=True)
    z = 30.0 + np.concatenate([[0.0], np.cumsum(spacings)])
    for k, z_k in enumerate(z):
        position = np.array([-10.0, -20.0, z_k])
        i, j = np.mgrid[: size[0], : size[1]]
        world = position + i[..., None] * 0.7 * column + j[..., None] * 0.8 * row
        ds = image(k, position, orientation=(*row, *column), GantryDetectorTilt=tilt_degrees)
        ds.Rows, ds.Columns = size
        ds.PixelData = np.rint(world_values(world) + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)


def world_values(lps: np.ndarray) -> np.ndarray:
    return 200.0 + 5.0 * lps[..., 0] + 10.0 * lps[..., 1] + 20.0 * lps[..., 2]


def test_gantry_tilt_is_corrected_every_voxel_where_it_was_measured(tmp_path):
    tilted_series(tmp_path / "s", [3.0] * 5)
    volume = read_volume(tmp_path / "s")
    thickness_along_normal = 3.0 * np.cos(np.radians(15.0))
    assert volume.metadata["slice_spacing_mm"] == pytest.approx(thickness_along_normal)
    assert volume.metadata["dicom"]["gantry_tilt_corrected_degrees"] == pytest.approx(15.0)
    assert volume.shape[1:] == (40 + 6, 30)  # grown by the shift: 5 steps of 3 sin 15 = 0.78 mm / 0.7 mm rows
    index = np.stack(np.meshgrid(*map(np.arange, volume.shape), indexing="ij"), axis=-1).reshape(-1, 3)
    ras = index @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    expected = world_values(ras * [-1, -1, 1]).reshape(volume.shape)  # RAS -> LPS
    inside = volume.data > -1024  # where a slice reached (the rest holds air)
    inside &= np.roll(inside, 1, axis=1) & np.roll(inside, -1, axis=1)  # not the interpolated rim
    assert inside.sum() > 0.8 * 6 * 40 * 30
    np.testing.assert_allclose(volume.data[inside], expected[inside], atol=1.01)  # stored values are rounded


def test_runs_of_different_spacing_are_separate_stacks_each_read_tilted_or_not(tmp_path):
    tilted_series(tmp_path / "s", [4.0] * 4 + [1.1] + [7.0] * 3)  # a GE head: 4 mm slices, then 7 mm
    stacks = list_series(tmp_path / "s")
    assert [(s.key, s.slices, s.part) for s in stacks] == [
        ("3:slices=1-5", 5, f"slices 1-5 {4 * np.cos(np.radians(15)):.3g} mm apart"),
        ("3:slices=6-9", 4, f"slices 6-9 {7 * np.cos(np.radians(15)):.3g} mm apart"),
    ]
    with pytest.raises(CycleINRError, match=r"holds 2 image series: .*\[3:slices=6-9\]; choose one"):
        read_volume(tmp_path / "s")
    thick = read_dicom(tmp_path / "s", series="3:slices=6-9")
    assert thick.shape[0] == 4
    assert thick.metadata["slice_spacing_mm"] == pytest.approx(7 * np.cos(np.radians(15)))


def test_centres_off_a_straight_line_are_refused_not_read_as_a_tilt(tmp_path):
    tilt = np.radians(15.0)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(-np.sin(tilt)))
    positions = [(-10.0, -20.0 + (5.0 if k == 2 else 0.0), 30.0 + 3 * k) for k in range(5)]
    write_series(tmp_path / "s", positions, orientation=orientation, GantryDetectorTilt=15)
    with pytest.raises(CycleINRError, match=r"do not lie on one line .*GantryDetectorTilt says 15 degrees"):
        read_volume(tmp_path / "s")
    sliding = [(0.0, 10.0 * k, 1.0 * k) for k in range(5)]  # 84 degrees off the normal: a broken header
    write_series(tmp_path / "t", sliding)
    with pytest.raises(CycleINRError, match=r"84 degrees off the slice normal, more than any gantry tilts"):
        read_volume(tmp_path / "t")


@pytest.mark.parametrize(("field", "key"), [("EchoNumbers", "echo"), ("TemporalPositionIdentifier", "t")])
def test_echoes_and_temporal_positions_are_split_never_stacked(tmp_path, field, key):
    for part in (1, 2):
        write_series(tmp_path / "s", axial_positions(3), names=[f"{key}{part}_{k}" for k in range(3)],
                     **{field: part})  # fmt: skip
    stacks = list_series(tmp_path / "s")
    assert [(s.key, s.slices) for s in stacks] == [(f"3:{key}=1", 3), (f"3:{key}=2", 3)]
    with pytest.raises(CycleINRError, match="series 3 holds 2 stacks") as error:
        read_volume(tmp_path / "s", series=3)
    assert f"[3:{key}=2]" in str(error.value)
    with pytest.raises(CycleINRError, match="holds 2 image series"):
        read_volume(tmp_path / "s")
    volume = read_volume(tmp_path / "s", series=f"3:{key}=2")
    assert volume.shape == (3, ROWS, COLUMNS) and volume.metadata["dicom"]["part"].endswith("2")


def test_duplicate_positions_are_refused_and_copied_files_read_once(tmp_path):
    paths = write_series(tmp_path / "copies", axial_positions(3))
    (tmp_path / "copies" / "copy.dcm").write_bytes(paths[1].read_bytes())
    volume = read_volume(tmp_path / "copies")
    assert volume.shape[0] == 3 and volume.metadata["dicom"]["duplicate_copies_ignored"] == 1

    write_series(tmp_path / "twice", axial_positions(3) + [axial_positions(3)[1]])
    with pytest.raises(CycleINRError, match=r"two different images lie at the same position \(32\.00 mm"):
        read_volume(tmp_path / "twice")


def test_localizers_non_images_and_other_files_are_skipped(tmp_path):
    folder = tmp_path / "s"
    write_series(folder, axial_positions(3))
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    image(9, (0, -100, 100), orientation=sagittal).save_as(
        folder / "scout_in_series.dcm", enforce_file_format=True
    )
    scout = image(0, (0, 0, 0), series_uid="1.2.3.5", series_number=1)
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.save_as(folder / "scout_series.dcm", enforce_file_format=True)
    report = image(0, (0, 0, 0), series_uid="1.2.3.6", Modality="SR")
    del report.PixelData
    report.save_as(folder / "report.dcm", enforce_file_format=True)
    no_pixels = image(0, (0, 0, 0), series_uid="1.2.3.7")
    del no_pixels.PixelData
    no_pixels.save_as(folder / "header_only.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "DICOMDIR").write_bytes(b"\0" * 200)
    volume = read_volume(folder)
    assert volume.shape[0] == 3
    assert volume.metadata["dicom"]["skipped_files"] == {
        "not DICOM": 1, "SR (not an image)": 1, "without pixels": 1, "localizer": 1,
        "other orientation (localizer?)": 1,
    }  # fmt: skip


def test_enhanced_multi_frame_ct_reads_through_its_functional_groups(tmp_path):
    ds = image(0, (0, 0, 0), NumberOfFrames=4)
    for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                "RescaleSlope", "RescaleIntercept"):  # fmt: skip
        delattr(ds, key)
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = list(AXIAL)
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [0.7, 0.8]
    shared.PixelMeasuresSequence[0].SliceThickness = 2.0
    shared.PixelValueTransformationSequence = [Dataset()]
    shared.PixelValueTransformationSequence[0].RescaleSlope = 1
    shared.PixelValueTransformationSequence[0].RescaleIntercept = -1024
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for position in (axial_positions(4)[k] for k in (2, 0, 3, 1)):  # frames out of order
        group = Dataset()
        group.PlanePositionSequence = [Dataset()]
        group.PlanePositionSequence[0].ImagePositionPatient = list(position)
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack([stored_values(k) for k in range(4)]).tobytes()
    (tmp_path / "mf").mkdir()
    ds.save_as(tmp_path / "mf" / "enhanced.dcm", enforce_file_format=True)
    volume = read_volume(tmp_path / "mf" / "enhanced.dcm")
    np.testing.assert_array_equal(volume.data[0], stored_values(1).astype(np.int16) - 1024)  # z = 30
    np.testing.assert_array_equal(volume.data[3], stored_values(2).astype(np.int16) - 1024)
    assert volume.spacing == pytest.approx((2.0, 0.7, 0.8))

    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(tmp_path / "mf" / "enhanced.dcm", enforce_file_format=True)
    with pytest.raises(CycleINRError, match="holds 4 frames but positions for 0"):
        read_volume(tmp_path / "mf")


def test_mr_without_rescale_keeps_the_stored_values(tmp_path):
    write_series(tmp_path / "s", axial_positions(3), modality="MR", slope=None)
    volume = read_volume(tmp_path / "s")
    assert volume.data.dtype == np.uint16 and volume.metadata["modality"] == "MR"
    np.testing.assert_array_equal(volume.data[2], stored_values(2))


def test_sagittal_series_has_x_as_its_through_plane_axis(tmp_path):
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run to posterior, columns to feet: normal is -x (LPS)
    write_series(tmp_path / "s", [(5.0 - 1.5 * k, -50.0, 80.0) for k in range(4)], orientation=sagittal)
    volume = read_volume(tmp_path / "s")
    # Sorted along the normal (LPS -x, i.e. RAS +x): the first slice is the one at LPS x = 5 (RAS x = -5).
    np.testing.assert_allclose(volume.affine[:3, 0], (1.5, 0, 0), atol=1e-9)
    np.testing.assert_allclose(volume.affine[:3, 3], (-5.0, 50.0, 80.0), atol=1e-9)
    np.testing.assert_array_equal(volume.data[0], stored_values(0).astype(np.int16) - 1024)


def test_rle_compressed_series_reads_and_jpeg_ls_without_a_decoder_is_refused(tmp_path):
    folder = tmp_path / "rle"
    folder.mkdir()
    for k, position in enumerate(axial_positions(3)):
        ds = image(k, position)
        ds.compress(RLELossless)
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.data[1], stored_values(1).astype(np.int16) - 1024)

    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder (python-gdcm or pylibjpeg-libjpeg) is installed here")
    folder = tmp_path / "jpeg-ls"
    folder.mkdir()
    for k, position in enumerate(axial_positions(2)):
        ds = image(k, position)
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 12])
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    with pytest.raises(
        CycleINRError, match=r"compressed as JPEG-LS Lossless Image Compression .*python-gdcm"
    ):
        read_volume(folder)


def test_corrupt_and_hostile_files_give_one_clear_error(tmp_path):
    folder = tmp_path / "cut"
    paths = write_series(folder, axial_positions(3))
    paths[1].write_bytes(paths[1].read_bytes()[:-20])  # pixel data cut short
    with pytest.raises(CycleINRError, match="cannot read .*slice001.dcm"):
        read_volume(folder)

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    with pytest.raises(
        CycleINRError, match=r"no DICOM image series in .*garbage \(skipped: 1 without pixels\)"
    ):
        read_volume(garbage)

    huge = tmp_path / "huge"
    write_series(huge, axial_positions(2), Rows=65535, Columns=65535)  # a header that lies about its size
    with pytest.raises(CycleINRError, match="more than 2,147,483,648|GiB|pixel data"):
        read_volume(huge)


def test_several_series_are_listed_and_picked_by_number_or_uid(tmp_path):
    write_series(tmp_path / "s", axial_positions(3), names=["a1", "a2", "a3"])
    write_series(tmp_path / "s", axial_positions(2), names=["b1", "b2"], series_uid="1.2.3.8",
                 series_number=7,
                 SeriesDescription="THIN")  # fmt: skip
    stacks = list_series(tmp_path / "s")
    assert [(s.number, s.uid, s.slices, s.description) for s in stacks] == [
        (3, "1.2.3.4", 3, ""), (7, "1.2.3.8", 2, "THIN"),
    ]  # fmt: skip
    listed = (
        r"holds 2 image series: series 3 \(no description\) \(CT, 3 slices\) \[3\]; "
        r'series 7 "THIN" \(CT, 2 slices\) \[7\]; choose one with --series'
    )
    with pytest.raises(CycleINRError, match=listed):
        read_volume(tmp_path / "s")
    assert read_volume(tmp_path / "s", series=7).shape[0] == 2
    assert read_volume(tmp_path / "s", series="1.2.3.4").shape[0] == 3
    assert read_dicom(tmp_path / "s" / "b1").shape[0] == 2  # a file: its own series
    with pytest.raises(CycleINRError, match="no series '9'"):
        read_volume(tmp_path / "s", series="9")


def test_folders_without_dicom_and_series_for_a_nifti_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(CycleINRError, match=r"no DICOM image series in .*empty \(skipped: 1 not DICOM\)"):
        read_volume(tmp_path / "empty")
    nifti = tmp_path / "scan.nii.gz"
    nifti.write_bytes(b"")
    with pytest.raises(CycleINRError, match="it is not a DICOM file"):
        read_volume(nifti, series=3)
