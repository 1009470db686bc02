"""NIfTI reading and writing: canonical axes, geometry kept exactly, bad files refused with one error."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import napari_cycleinr.io as volume_io
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume, write_volume
from napari_cycleinr.volume import Volume

DATA = Path(__file__).parent / "data"
CT = DATA / "ct_totalseg_sm_122x101x30_3mm.nii.gz"
HEADSQ = DATA / "ct_vtk_headsq_64x64x93_1p5mm.nii.gz"
MR = DATA / "mr_totalseg_sm_117x91x20_3mm.nii.gz"


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None, **fields: object) -> Path:
    image = nib.Nifti1Image(array, np.eye(4) if affine is None else affine, dtype=array.dtype)
    for key, value in fields.items():
        image.header[key] = value
    nib.save(image, path)
    return path


def patch_header(path: Path, **fields: object) -> None:
    """Rewrite header fields of an uncompressed .nii in place, bypassing nibabel's consistency fixes."""
    header = nib.load(path).header.copy()
    for key, value in fields.items():
        header[key] = value
    with open(path, "r+b") as file:
        header.write_to(file)


def canonical_index(file_index: tuple[int, int, int], file_axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(file_index[axis] for axis in file_axes)


@pytest.mark.parametrize(
    ("path", "shape", "spacing", "file_axes", "modality"),
    [
        (CT, (30, 101, 122), (3.0, 3.0, 3.0), (2, 1, 0), "CT"),
        (HEADSQ, (64, 93, 64), (3.2, 1.5, 3.2), (0, 2, 1), "CT"),
        (MR, (20, 91, 117), (3.0, 3.0, 3.0), (2, 1, 0), "MR"),
    ],
)
def test_real_file_reads_canonically_and_round_trips(tmp_path, path, shape, spacing, file_axes, modality):
    original = nib.load(path)
    file_array = np.asanyarray(original.dataobj)
    volume = read_volume(path)

    assert volume.shape == shape
    np.testing.assert_allclose(volume.spacing, spacing, rtol=1e-6)
    assert volume.file_axes == file_axes
    assert volume.data.dtype == np.int16
    np.testing.assert_array_equal(volume.data, np.transpose(file_array, file_axes))
    assert volume.metadata["format"] == "nifti"
    assert volume.metadata["modality"] == modality
    assert volume.metadata["dtype"] == "int16"
    assert volume.metadata["source_path"] == str(path.resolve())
    expected_header = {"qform_code": 1, "sform_code": 1, "xyzt_units": 10, "descrip": ""}
    assert volume.metadata["nifti_header"] == expected_header

    # Every voxel keeps its world position and value: check a corner and an interior voxel.
    for file_index in [(0, 0, 0), (5, 17, 11)]:
        canonical = canonical_index(file_index, file_axes)
        np.testing.assert_allclose(
            volume.affine @ [*canonical, 1], original.affine @ [*file_index, 1], atol=1e-6
        )
        assert volume.data[canonical] == file_array[file_index]

    out = write_volume(volume, tmp_path / "out.nii.gz")
    written = nib.load(out)
    assert written.shape == original.shape
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), file_array)
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
    assert written.get_data_dtype() == np.int16
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (1, 1)
    assert open(out, "rb").read(2) == b"\x1f\x8b"  # really gzipped despite the temporary name

    again = read_volume(out)
    np.testing.assert_array_equal(again.data, volume.data)
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-5)
    assert again.file_axes == volume.file_axes
    assert again.data.dtype == volume.data.dtype


def test_explicit_axis_overrides_the_largest_spacing():
    volume = read_volume(HEADSQ, axis="z")
    assert volume.file_axes == (2, 1, 0)
    assert volume.shape == (93, 64, 64)
    np.testing.assert_allclose(volume.spacing, (1.5, 3.2, 3.2), rtol=1e-6)
    assert read_volume(HEADSQ, axis="Y").file_axes == (1, 2, 0)


def test_unknown_axis_name_is_refused():
    with pytest.raises(CycleINRError, match="axis must be 'x', 'y' or 'z'"):
        read_volume(CT, axis="k")


def test_thick_y_slices_become_z_and_are_written_back_in_the_file_layout(tmp_path):
    file_array = np.arange(5 * 7 * 6, dtype=np.float32).reshape(5, 7, 6)
    affine = np.diag([0.8, 4.0, 0.9, 1.0])
    affine[:3, 3] = (-10.0, 20.0, 5.0)
    source = save_nifti(tmp_path / "thick y.nii", file_array, affine)

    volume = read_volume(source)
    assert volume.file_axes == (1, 2, 0)  # through-plane j, then k, i
    assert volume.shape == (7, 6, 5)
    np.testing.assert_allclose(volume.spacing, (4.0, 0.9, 0.8))
    assert volume.data[3, 2, 4] == file_array[4, 3, 2]
    np.testing.assert_allclose(volume.affine @ [3, 2, 4, 1], affine @ [4, 3, 2, 1])

    written = nib.load(write_volume(volume, tmp_path / "back.nii"))
    assert written.shape == (5, 7, 6)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), file_array)
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)


def test_equal_spacings_keep_the_files_own_slice_axis(tmp_path):
    source = save_nifti(tmp_path / "iso.nii", np.zeros((4, 5, 6), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    assert read_volume(source).file_axes == (2, 1, 0)


def test_oblique_affine_round_trips(tmp_path):
    angle = math.radians(23.0)
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    tilt = math.radians(-11.0)
    rotation = rotation @ np.array(
        [[1.0, 0.0, 0.0], [0.0, math.cos(tilt), -math.sin(tilt)], [0.0, math.sin(tilt), math.cos(tilt)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.75, 5.0])
    affine[:3, 3] = (12.5, -40.25, 88.0)
    file_array = np.random.default_rng(0).normal(size=(9, 8, 4)).astype(np.float32)
    source = save_nifti(tmp_path / "oblique.nii.gz", file_array, affine)

    volume = read_volume(source)
    assert volume.file_axes == (2, 1, 0)
    np.testing.assert_allclose(volume.spacing, (5.0, 0.75, 0.7), rtol=1e-6)
    again = read_volume(write_volume(volume, tmp_path / "oblique out.nii.gz"))
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-5)
    np.testing.assert_array_equal(again.data, volume.data)
    written = nib.load(tmp_path / "oblique out.nii.gz")
    np.testing.assert_allclose(written.header.get_qform(), affine, atol=1e-5)
    np.testing.assert_allclose(written.header.get_sform(), affine, atol=1e-5)


def test_volume_from_another_format_is_written_in_xyz_order(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    volume = Volume.from_spacing(data, (5.0, 1.0, 0.5), origin=(7.0, 8.0, 9.0), metadata={"format": "tiff"})
    written = nib.load(write_volume(volume, tmp_path / "from tiff.nii.gz"))
    assert written.shape == (4, 3, 2)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), data.transpose(2, 1, 0))
    np.testing.assert_allclose(written.affine, [[0.5, 0, 0, 9], [0, 1, 0, 8], [0, 0, 5, 7], [0, 0, 0, 1]])
    assert written.get_data_dtype() == np.uint16
    assert written.header.get_xyzt_units() == ("mm", "unknown")


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.float64])
def test_value_types_round_trip(tmp_path, dtype):
    data = (np.arange(3 * 4 * 5) - 7).astype(dtype).reshape(3, 4, 5)
    volume = Volume.from_spacing(data, (2.0, 1.0, 1.0))
    again = read_volume(write_volume(volume, tmp_path / "typed.nii"))
    assert again.data.dtype == dtype
    np.testing.assert_array_equal(again.data, data)


def test_bool_voxels_become_uint8(tmp_path):
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 2, 3] = True
    source = save_nifti(tmp_path / "mask.nii", mask.astype(np.uint8))
    assert read_volume(source).data.dtype == np.uint8
    volume = Volume.from_spacing(mask, (1.0, 1.0, 1.0))
    again = read_volume(write_volume(volume, tmp_path / "mask out.nii"))
    assert again.data.dtype == np.uint8
    assert again.data[1, 2, 3] == 1 and again.data.sum() == 1


def test_complex_voxels_are_refused(tmp_path):
    source = save_nifti(tmp_path / "complex.nii", np.ones((3, 4, 5), np.complex64))
    with pytest.raises(CycleINRError, match="complex"):
        read_volume(source)


def test_scaled_data_and_nan_voxels_are_read(tmp_path):
    raw = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    source = save_nifti(tmp_path / "scaled.nii", raw)
    patch_header(source, scl_slope=40.0, scl_inter=-1024.0)
    volume = read_volume(source)
    np.testing.assert_allclose(volume.data, np.transpose(raw * 40.0 - 1024.0, (2, 1, 0)))
    assert volume.metadata["modality"] == "CT"

    with_nan = np.ones((3, 4, 5), np.float32)
    with_nan[0, 0, 0] = np.nan
    volume = read_volume(save_nifti(tmp_path / "nan.nii", with_nan))
    assert np.isnan(volume.data[0, 0, 0]) and volume.metadata["modality"] == "MR"


def test_micron_units_are_converted_to_mm(tmp_path):
    microns = np.diag([500.0, 500.0, 2000.0, 1.0])
    source = save_nifti(tmp_path / "microns.nii", np.zeros((3, 4, 5), np.uint8), microns)
    patch_header(source, xyzt_units=3)
    volume = read_volume(source)
    np.testing.assert_allclose(volume.spacing, (2.0, 0.5, 0.5))
    written = nib.load(write_volume(volume, tmp_path / "mm.nii"))
    assert written.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(written.header.get_zooms(), (0.5, 0.5, 2.0))


def test_trailing_singleton_axis_is_squeezed(tmp_path):
    source = save_nifti(tmp_path / "4d one.nii", np.arange(60, dtype=np.int16).reshape(3, 4, 5, 1))
    volume = read_volume(source)
    assert volume.shape == (5, 4, 3)
    assert volume.data[4, 3, 2] == 59


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((4, 4, 4, 12), "4 dimensions with 12 volumes; give a single 3D volume"),
        ((4, 4, 4, 1, 3), "5 dimensions"),
        ((4, 4), "2D image"),
    ],
)
def test_wrong_dimensionality_is_refused(tmp_path, shape, message):
    source = save_nifti(tmp_path / "bad.nii.gz", np.zeros(shape, np.int16))
    with pytest.raises(CycleINRError, match=message):
        read_volume(source)


@pytest.mark.parametrize("bad_size", [0.0, -1.5, float("nan")])
def test_bad_pixdim_is_refused(tmp_path, bad_size):
    source = save_nifti(tmp_path / "pixdim.nii", np.zeros((3, 4, 5), np.int16))
    pixdim = nib.load(source).header["pixdim"].copy()
    pixdim[2] = bad_size
    patch_header(source, pixdim=pixdim)
    with pytest.raises(CycleINRError, match="pixdim"):
        read_volume(source)


def test_non_finite_affine_is_refused_with_the_file_name(tmp_path):
    source = save_nifti(tmp_path / "nan affine.nii", np.zeros((3, 4, 5), np.int16))
    patch_header(source, srow_x=[np.nan, 0.0, 0.0, 0.0])
    with pytest.raises(CycleINRError, match="nan affine.nii: the volume's affine must be a finite"):
        read_volume(source)


def test_header_claiming_a_huge_array_is_refused_before_reading(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 1000))
    header.set_data_dtype(np.int16)
    path = tmp_path / "huge.nii"
    with open(path, "wb") as file:
        header.write_to(file)
        file.write(b"\0" * 4)  # no voxel data at all: reading any would fail differently
    with pytest.raises(CycleINRError, match="4,000,000,000 voxels"):
        read_volume(path)


def test_array_larger_than_free_memory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(volume_io, "available_memory_bytes", lambda: 100)
    with pytest.raises(CycleINRError, match="needs .* GiB, only .* GiB free"):
        read_volume(CT)


def test_damaged_or_missing_files_give_one_clear_error(tmp_path):
    text = tmp_path / "notes.nii"
    text.write_text("this is not an image\n" * 40)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(CT.read_bytes()[: CT.stat().st_size // 2])
    short_uncompressed = tmp_path / "short.nii"
    save_nifti(short_uncompressed, np.ones((30, 30, 30), np.int16))
    short_uncompressed.write_bytes(short_uncompressed.read_bytes()[:2000])
    not_gzip = tmp_path / "plain bytes.nii.gz"
    not_gzip.write_bytes(b"\x00" * 500)
    folder = tmp_path / "folder.nii"
    folder.mkdir()

    for path, reason in [
        (text, "cannot read"),
        (truncated, "cannot read"),
        (short_uncompressed, "cannot read"),
        (not_gzip, "cannot read"),
        (folder, "is a folder"),
        (tmp_path / "missing.nii.gz", "no such file"),
        (tmp_path / "image.png", "unsupported file type"),
    ]:
        with pytest.raises(CycleINRError, match=reason) as caught:
            read_volume(path)
        assert path.name in str(caught.value)


def test_paths_with_spaces_and_non_ascii_characters(tmp_path):
    folder = tmp_path / "scans à Zürich ü"
    folder.mkdir()
    volume = read_volume(MR)
    out = write_volume(volume, folder / "tête IRM 3 mm.nii.gz")
    assert out.name == "tête IRM 3 mm.nii.gz"
    np.testing.assert_array_equal(read_volume(out).data, volume.data)
    assert sorted(p.name for p in folder.iterdir()) == ["tête IRM 3 mm.nii.gz"]


def test_upper_case_suffix_is_recognised_and_compressed(tmp_path):
    out = write_volume(read_volume(MR), tmp_path / "SCAN.NII.GZ")
    with gzip.open(out) as file:
        assert len(file.read(348)) == 348
    assert read_volume(out).shape == (20, 91, 117)


def test_the_header_slice_axis_wins_over_the_largest_spacing(tmp_path):
    """A super-resolved file has its finest spacing along z; the slice axis recorded on write keeps it z."""
    import numpy as np

    from napari_cycleinr.io import read_volume, write_volume
    from napari_cycleinr.volume import Volume

    fine_z = Volume.from_spacing(np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), (1.0, 3.0, 3.0))
    path = write_volume(fine_z, tmp_path / "sr.nii.gz")
    assert nib.load(path).header.get_dim_info()[2] == 2
    back = read_volume(path)
    assert back.shape == (6, 5, 4) and np.array_equal(back.data, fine_z.data)
    assert read_volume(path, axis="y").shape[0] == 5  # naming an axis still wins over the header
