"""TIFF reading and writing: ImageJ and OME spacing, origin and type kept, bad stacks refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume, write_volume
from napari_cycleinr.volume import Volume

DATA = Path(__file__).parent / "data"


def ramp(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 251).astype(dtype).reshape(shape)


def test_imagej_spacing_in_microns_is_read_in_mm(tmp_path):
    path = tmp_path / "imagej.tif"
    tifffile.imwrite(
        path,
        ramp((4, 6, 5), np.uint16),
        imagej=True,
        resolution=(1 / 250.0, 1 / 125.0),  # pixels per micron: x 250 um, y 125 um
        metadata={"axes": "ZYX", "spacing": 2000.0, "unit": "micron"},
    )
    volume = read_volume(path)
    np.testing.assert_allclose(volume.spacing, (2.0, 0.125, 0.25))
    assert volume.file_axes == (0, 1, 2)
    assert volume.data.dtype == np.uint16
    np.testing.assert_array_equal(volume.data, ramp((4, 6, 5), np.uint16))
    assert volume.metadata["tiff_flavour"] == "imagej"
    assert volume.metadata["tiff_unit"] == "micron"
    assert volume.metadata["spacing_assumed"] is False


def test_imagej_escaped_micro_sign_is_understood(tmp_path):
    path = tmp_path / "escaped.tif"
    tifffile.imwrite(
        path,
        ramp((3, 4, 5)),
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "ZYX", "spacing": 1500.0, "unit": "\\u00B5m"},
    )
    np.testing.assert_allclose(read_volume(path).spacing, (1.5, 0.0005, 0.0005))


def test_ome_physical_sizes_are_read_in_mm(tmp_path):
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(
        path,
        ramp((5, 4, 6), np.int16),
        ome=True,
        photometric="minisblack",
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 300.0,  # no unit: OME means micrometres
            "PhysicalSizeY": 0.04,
            "PhysicalSizeYUnit": "cm",
            "PhysicalSizeZ": 3.5,
            "PhysicalSizeZUnit": "mm",
        },
    )
    volume = read_volume(path)
    np.testing.assert_allclose(volume.spacing, (3.5, 0.4, 0.3))
    np.testing.assert_allclose(volume.origin, 0.0)
    assert volume.metadata["tiff_flavour"] == "ome"
    assert volume.metadata["spacing_assumed"] is False


def test_plain_tiff_without_spacing_warns_and_assumes_1_mm(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, ramp((3, 4, 5), np.uint8), photometric="minisblack")
    with pytest.warns(UserWarning, match="assuming 1 mm"):
        volume = read_volume(path)
    assert volume.spacing == (1.0, 1.0, 1.0)
    assert volume.metadata["spacing_assumed"] is True
    assert volume.metadata["tiff_flavour"] == "plain"


def test_imagej_without_calibration_warns(tmp_path):
    path = tmp_path / "uncalibrated.tif"
    tifffile.imwrite(path, ramp((3, 4, 5)), imagej=True, metadata={"axes": "ZYX"})
    with pytest.warns(UserWarning, match="z spacing"):
        volume = read_volume(path)
    assert volume.metadata["spacing_assumed"] is True


@pytest.mark.parametrize(
    ("dtype", "flavour"),
    [(np.uint8, "imagej"), (np.uint16, "imagej"), (np.int16, "imagej"), (np.float32, "imagej"),
     (np.float64, "ome"), (np.int32, "ome"), (np.int8, "ome")],
)  # fmt: skip
def test_round_trip_keeps_values_type_spacing_and_origin(tmp_path, dtype, flavour):
    data = ramp((4, 3, 5), dtype) - (7 if np.dtype(dtype).kind != "u" else 0)
    volume = Volume.from_spacing(data.astype(dtype), (2.5, 0.123456789, 0.7), origin=(-12.5, 30.25, 101.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an axis-aligned volume must not warn
        out = write_volume(volume, tmp_path / f"rt {np.dtype(dtype).name}.tif")
    again = read_volume(out)
    assert again.metadata["tiff_flavour"] == flavour
    assert again.data.dtype == dtype
    np.testing.assert_array_equal(again.data, volume.data)
    np.testing.assert_allclose(again.spacing, volume.spacing, rtol=1e-7)
    np.testing.assert_allclose(again.origin, volume.origin, atol=1e-6)
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-6)


def test_width_of_three_is_not_mistaken_for_rgb(tmp_path):
    volume = Volume.from_spacing(ramp((4, 5, 3), np.uint8), (2.0, 1.0, 1.0))
    again = read_volume(write_volume(volume, tmp_path / "narrow.tif"))
    assert again.shape == (4, 5, 3)
    np.testing.assert_array_equal(again.data, volume.data)


def test_thick_y_stack_becomes_z_and_is_written_back_in_the_file_layout(tmp_path):
    file_array = ramp((6, 4, 7), np.int16)
    path = tmp_path / "thick y.tif"
    metadata = {"axes": "ZYX", "spacing": 1.0, "unit": "mm"}
    tifffile.imwrite(path, file_array, imagej=True, resolution=(1 / 0.5, 1 / 5.0), metadata=metadata)
    volume = read_volume(path)
    assert volume.file_axes == (1, 0, 2)
    assert volume.shape == (4, 6, 7)
    np.testing.assert_allclose(volume.spacing, (5.0, 1.0, 0.5))
    assert volume.data[2, 3, 4] == file_array[3, 2, 4]
    np.testing.assert_allclose(volume.affine @ [2, 3, 4, 1], [4 * 0.5, 2 * 5.0, 3 * 1.0, 1])

    out = write_volume(volume, tmp_path / "back.tif")
    np.testing.assert_array_equal(tifffile.imread(out), file_array)
    again = read_volume(out)
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-9)
    assert read_volume(out, axis="z").file_axes == (0, 1, 2)


def test_nifti_volume_to_tiff_keeps_spacing_and_position_and_warns_about_flips(tmp_path):
    volume = read_volume(DATA / "mr_totalseg_sm_117x91x20_3mm.nii.gz")  # LPS: x and y flipped
    with pytest.warns(UserWarning, match="rotation or flips are dropped"):
        out = write_volume(volume, tmp_path / "mr.tiff")
    again = read_volume(out)
    np.testing.assert_array_equal(again.data, volume.data)
    np.testing.assert_allclose(again.spacing, volume.spacing)
    # the origin along the volume's own axes (x and y negated here): napari's translate, kept (issue #23)
    direction = volume.affine[:3, :3] / np.asarray(volume.spacing)
    own_axes = np.linalg.solve(direction, volume.affine[:3, 3])
    np.testing.assert_allclose(again.origin, own_axes[::-1], atol=1e-6)


@pytest.mark.parametrize(
    ("array", "kwargs", "message"),
    [
        (np.zeros((5, 6), np.uint8), {}, "2D image"),
        (np.zeros((3, 5, 6, 3), np.uint8), {"photometric": "rgb"}, "colour"),
        (np.zeros((3, 2, 5, 6), np.uint16), {"imagej": True, "metadata": {"axes": "ZCYX"}}, "2 channels"),
        (np.zeros((2, 3, 5, 6), np.float32), {"imagej": True, "metadata": {"axes": "TZYX"}}, "4 dimensions"),
        (np.zeros((3, 5, 6), np.complex64), {"photometric": "minisblack"}, "complex"),
    ],
)
def test_stacks_that_are_not_one_grey_volume_are_refused(tmp_path, array, kwargs, message):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, array, **kwargs)
    with pytest.raises(CycleINRError, match=message):
        read_volume(path)


def test_damaged_tiff_gives_one_clear_error(tmp_path):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, ramp((20, 30, 40)), imagej=True, metadata={"axes": "ZYX"})
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:5000])
    text = tmp_path / "text.tiff"
    text.write_text("not a tiff at all\n")
    for path in (truncated, text):
        with pytest.raises(CycleINRError, match="cannot read"):
            read_volume(path)


@pytest.mark.parametrize("dtype, flavour", [(np.int16, "imagej"), (np.float64, "ome")])
def test_the_recorded_slice_axis_wins_over_the_largest_spacing(tmp_path, dtype, flavour):
    """A super-resolved stack has its finest spacing along z; both TIFF flavours record that z is the slice axis."""
    fine_z = Volume.from_spacing(ramp((6, 5, 4), dtype), (1.0, 3.0, 3.0))
    path = write_volume(fine_z, tmp_path / "sr.tif")
    back = read_volume(path)
    assert back.metadata["tiff_flavour"] == flavour
    assert back.shape == (6, 5, 4) and np.array_equal(back.data, fine_z.data)
    assert read_volume(path, axis="y").shape[0] == 5  # naming an axis still wins
