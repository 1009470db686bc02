"""The napari reader: only NIfTI and TIFF, never raises when asked, layers with their physical geometry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_cycleinr._layers import KEY, scale_translate
from napari_cycleinr._reader import napari_get_reader, read_files
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume, write_volume
from napari_cycleinr.volume import Volume

DATA = Path(__file__).parent / "data"
CT_HEAD = DATA / "ct_vtk_headsq_64x64x93_1p5mm.nii.gz"
MR = DATA / "mr_totalseg_sm_117x91x20_3mm.nii.gz"
SAMPLE = Path(__file__).parents[1] / "src" / "napari_cycleinr" / "sample_data" / "chest_ct_5mm.nii.gz"


@pytest.fixture
def tiff_file(tmp_path):
    volume = Volume.from_spacing(
        np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6), (2.5, 0.5, 0.25), origin=(10.0, -3.0, 7.0)
    )
    return write_volume(volume, tmp_path / "stack.tif")


def test_get_reader_accepts_only_existing_nifti_and_tiff_files(tmp_path, tiff_file):
    assert callable(napari_get_reader(str(SAMPLE)))
    assert callable(napari_get_reader(SAMPLE))
    assert callable(napari_get_reader(str(tiff_file)))
    assert callable(napari_get_reader([str(SAMPLE), str(tiff_file)]))
    upper = shutil.copy(SAMPLE, tmp_path / "SCAN.NII.GZ")
    assert callable(napari_get_reader(str(upper)))

    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "array.npy").write_bytes(b"\x93NUMPY")
    (tmp_path / "folder.nii.gz").mkdir()
    for path in (
        tmp_path / "image.png",
        tmp_path / "array.npy",
        tmp_path / "folder.nii.gz",  # a folder with a NIfTI name
        tmp_path / "missing.nii.gz",
        tmp_path,
        [str(SAMPLE), str(tmp_path / "image.png")],  # all or nothing
        [],
        None,
        42,
        [None],
        "",
    ):
        assert napari_get_reader(path) is None, path


def test_reader_layer_carries_spacing_origin_window_and_geometry():
    ((data, kwargs, kind),) = read_files(str(SAMPLE))
    volume = read_volume(SAMPLE)
    assert kind == "image"
    assert data.shape == (16, 224, 224)
    assert kwargs["name"] == "chest_ct_5mm"
    np.testing.assert_allclose(kwargs["scale"], volume.spacing)
    np.testing.assert_allclose(kwargs["scale"], (5.0, 0.68164098, 0.68164098), rtol=1e-6)
    # The sample is stored like DICOM (x, y towards -R, -A): translate is the origin along those axes.
    np.testing.assert_allclose(kwargs["translate"], (-232.625, -99.5194931, -77.34369659), rtol=1e-6)
    assert kwargs["units"] == ("mm", "mm", "mm")
    assert kwargs["axis_labels"] == ("z", "y", "x")
    assert kwargs["contrast_limits"] == (-160.0, 240.0)  # W400 / L40
    info = kwargs["metadata"][KEY]
    np.testing.assert_array_equal(info["affine"], volume.affine)
    assert tuple(info["file_axes"]) == volume.file_axes
    assert info["volume_metadata"]["nifti_header"] == volume.metadata["nifti_header"]
    assert info["data_range"] == [float(data.min()), float(data.max())]


def test_translate_follows_the_axes_for_any_orientation():
    volume = read_volume(CT_HEAD)  # file axes permuted: canonical z is not the file's k
    scale, translate = scale_translate(volume.affine)
    direction = volume.affine[:3, :3] / scale
    np.testing.assert_allclose(direction @ translate, volume.origin, atol=1e-9)
    np.testing.assert_allclose(scale, volume.spacing)


def test_mr_opens_with_percentile_contrast():
    ((data, kwargs, _),) = read_files(MR)
    low, high = kwargs["contrast_limits"]
    assert kwargs["metadata"][KEY]["volume_metadata"]["modality"] == "MR"
    assert data.min() <= low < high <= data.max()


def test_tiff_spacing_and_origin(tiff_file):
    ((data, kwargs, _),) = read_files(tiff_file)
    assert data.shape == (4, 5, 6)
    np.testing.assert_allclose(kwargs["scale"], (2.5, 0.5, 0.25))
    np.testing.assert_allclose(kwargs["translate"], (10.0, -3.0, 7.0), atol=1e-9)


def test_damaged_file_gives_one_clear_error(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a nifti file")
    assert callable(napari_get_reader(str(bad)))  # the suffix is ours: the reader says why it fails
    with pytest.raises(CycleINRError, match="broken.nii.gz"):
        read_files(str(bad))


def test_viewer_opens_files_through_the_plugin(make_napari_viewer, tiff_file):
    viewer = make_napari_viewer()
    layers = viewer.open([str(SAMPLE), str(tiff_file)], plugin="napari-cycleinr", stack=False)
    assert [layer.name for layer in layers] == ["chest_ct_5mm", "stack"]
    ct = viewer.layers["chest_ct_5mm"]
    np.testing.assert_allclose(ct.scale, (5.0, 0.68164098, 0.68164098), rtol=1e-6)
    assert tuple(ct.contrast_limits) == (-160.0, 240.0)
    # The window is W400/L40, yet the slider still reaches the whole data range.
    low, high = ct.contrast_limits_range
    assert low <= ct.data.min() and high >= ct.data.max()
    assert tuple(str(u) for u in ct.units) == ("millimeter",) * 3
    assert tuple(ct.axis_labels) == ("z", "y", "x")
    np.testing.assert_allclose(viewer.layers["stack"].translate, (10.0, -3.0, 7.0), atol=1e-9)


# --- DICOM -------------------------------------------------------------------------------------------------

DICOM = DATA / "dicom"


def test_get_reader_takes_dicom_folders_and_files_but_not_other_folders(tmp_path):
    assert callable(napari_get_reader(str(DICOM / "ct_philips_2slices")))
    assert callable(napari_get_reader(str(DICOM / "ct_philips_2slices" / "I510")))  # no extension
    assert callable(napari_get_reader(str(DICOM)))  # series one level down
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "a.png").write_bytes(b"\x89PNG")
    for path in (tmp_path / "pictures", tmp_path, tmp_path / "pictures" / "a.png"):
        assert napari_get_reader(str(path)) is None, path
    export = tmp_path / "cd" / "DICOM" / "PAT1" / "STUDY1" / "SER1"  # as a CD or archive export nests them
    shutil.copytree(DICOM / "ct_philips_2slices", export)
    assert callable(napari_get_reader(str(tmp_path / "cd")))


def test_dicom_layer_matches_its_nifti_twin_and_carries_the_thickness():
    ((data, kwargs, kind),) = read_files(str(DICOM / "ct_philips_2slices"))
    assert kind == "image" and kwargs["name"] == "ct_philips_2slices" and data.shape == (2, 512, 512)
    twin = read_volume(DICOM / "ct_philips_twin_crop.nii.gz")
    twin_scale, twin_translate = scale_translate(twin.affine)
    np.testing.assert_allclose(kwargs["scale"], twin_scale, atol=1e-6)
    # the twin is cropped at row 60, column 100: its origin sits that far along the layer's own axes
    np.testing.assert_allclose(
        np.array(kwargs["translate"]) + np.array([0, 60, 100]) * kwargs["scale"], twin_translate, atol=0.01
    )
    assert kwargs["metadata"]["slice_thickness_mm"] == 1.0
    assert kwargs["metadata"][KEY]["volume_metadata"]["dicom"]["SeriesNumber"] == 202
    assert kwargs["contrast_limits"] == (-160.0, 240.0)


def test_a_folder_of_several_series_opens_each_and_names_the_refused_one(tmp_path):
    from tests.test_io_dicom_cases import write_series

    for name in ("ct_philips_2slices", "ct_ge_tilt_2slices", "mr_sag_3slices"):
        shutil.copytree(DICOM / name, tmp_path / "all", dirs_exist_ok=True)
    write_series(tmp_path / "all", [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 8.0, 10.0)], series_uid="1.2.3.7")
    with pytest.warns(UserWarning, match="series 3 .*not evenly spaced"):
        layers = read_files(str(tmp_path / "all"))
    assert [kw["name"] for _, kw, _ in layers] == [
        "all 2", "all 5 SAG MPRAGE 220 FOV", "all 202 STD BRAIN 1MM, iDose"  # the tilted GE head corrected
    ]
    with pytest.raises(CycleINRError, match="not evenly spaced"):
        read_files(str(tmp_path / "all" / "slice003.dcm"))


def test_viewer_opens_a_dicom_series_and_saves_it_as_a_new_series(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(DICOM / "mr_sag_3slices"), plugin="napari-cycleinr")
    volume = read_volume(DICOM / "mr_sag_3slices")
    np.testing.assert_allclose(layer.scale, volume.spacing)
    assert layer.metadata["slice_thickness_mm"] == pytest.approx(0.9)
    written = viewer.layers.save(str(tmp_path / "saved.dcm"), selected=False, plugin="napari-cycleinr")
    assert written == [str(tmp_path / "saved")]
    back = read_volume(tmp_path / "saved")
    np.testing.assert_array_equal(back.data, volume.data)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-6)
