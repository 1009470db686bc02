"""Numbers (intensity.py): integer outputs clip to their type and never wrap, float outputs are always finite,
one corrupt voxel cannot destroy an MR, CT output never leaves the input's [min, max], and what was clipped
is counted."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cycleinr.intensity import IntensityMap, cast_like, intensity_map, output_bounds
from napari_cycleinr.io import read_volume, write_volume
from napari_cycleinr.model.infer import super_resolve
from tests.conftest import CT_3MM, MR_3MM


def small(volume):
    """A corner of a real scan (12 slices, 48 x 48): the same values, a test of seconds."""
    return volume.replace(data=np.ascontiguousarray(volume.data[:12, 20:68, 20:68]))


def near_max_volume(dtype: type, tmp_path) -> object:
    """A real file on disk: the MR scan's pattern shifted to the top of `dtype`'s range."""
    mr = small(read_volume(MR_3MM))
    top = np.iinfo(dtype).max if np.dtype(dtype).kind in "iu" else float(np.finfo(dtype).max)
    if np.dtype(dtype).kind == "f":
        top = float(np.finfo(np.float16).max)  # NIfTI has no float16: the values of one, stored as float32
    pattern = mr.data.astype(np.float64) / float(mr.data.max())  # 0..1
    if np.dtype(dtype).kind in "iu":
        span = min(1000, int(top) // 2)
        data = np.asarray(top, dtype=dtype) - np.round(pattern * span).astype(dtype)  # in integers: exact
    else:
        data = (top * (0.9 + 0.1 * pattern)).astype(dtype)
    path = write_volume(mr.replace(data=data, metadata={}), tmp_path / f"near_max_{np.dtype(dtype)}.nii.gz")
    return read_volume(path)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.int16, np.uint8])
def test_integer_outputs_clip_to_their_type_and_never_wrap(dtype, tmp_path):
    volume = near_max_volume(dtype, tmp_path)
    info = np.iinfo(dtype)
    for method in ("trilinear", "tricubic"):  # cubic overshoots above the type's maximum at edges
        out = super_resolve(volume, factor=2, method=method, device="cpu").data
        exact = super_resolve(volume, factor=2, method=method, device="cpu", keep_dtype=False).data
        saturated = np.clip(exact.astype(np.float64), info.min, info.max)  # what clipping gives
        assert out.dtype == dtype
        # a wrap would put a voxel ~2**bits away from where it belongs
        tolerance = 1 + 2e-7 * float(info.max)  # float32 holds 24 bits of an int32/int64
        assert np.abs(out.astype(np.float64) - saturated).max() <= tolerance, method


@pytest.mark.parametrize(
    ("dtype", "expected_top"), [(np.int32, 2147483520), (np.int64, 9223371487098961920), (np.uint8, 255)]
)
def test_cast_like_saturates_at_the_largest_value_the_computation_can_hold(dtype, expected_top):
    values = np.array([3e19, -3e19, np.inf, -np.inf, np.nan, 1.4], np.float32)
    out = cast_like(values, np.dtype(dtype))
    info = np.iinfo(dtype)
    assert out[0] == expected_top and out[1] == info.min  # the minimum is a power of two: exact
    assert out[2] == out[0] and out[3] == out[1] and out[4] == 0 and out[5] == 1
    low, high = output_bounds(IntensityMap("MR", 0.0, 1.0, clip=False), np.dtype(dtype))
    assert high == expected_top and int(np.float32(high)) <= info.max


def test_float16_input_near_its_maximum_never_gives_inf(tmp_path, tiny_model):
    volume = near_max_volume(np.float32, tmp_path)
    assert volume.data.dtype == np.float32  # NIfTI stores float16 as float32: test float16 in memory too
    half = volume.replace(data=volume.data.astype(np.float16))
    for method, model in (("tricubic", None), ("cycleinr", tiny_model)):
        out = super_resolve(half, factor=2.5, method=method, model=model, device="cpu")
        assert out.data.dtype == np.float16 and np.isfinite(out.data).all(), method
    assert np.isfinite(cast_like(np.array([7e4, -1e6, np.nan], np.float32), np.dtype(np.float16))).all()


def test_one_corrupt_voxel_does_not_destroy_an_mr(tmp_path, tiny_model):
    clean = small(read_volume(MR_3MM))
    data = clean.data.astype(np.float32)
    data[0, 10, 10] = 1e30
    path = write_volume(clean.replace(data=data, metadata={}), tmp_path / "corrupt.nii.gz")
    corrupt = read_volume(path)
    mapping = intensity_map(corrupt.data)
    assert mapping.clip_report() == {"input_outside_range": 1}
    for method, model in (("cycleinr", tiny_model), ("trilinear", None)):
        expected = super_resolve(clean.replace(data=clean.data.astype(np.float32)), factor=2, method=method,
                                 model=model, device="cpu").data  # fmt: skip
        got = super_resolve(corrupt, factor=2, method=method, model=model, device="cpu").data
        assert np.isfinite(got).all()
        assert got[0].max() < 10 * float(clean.data.max()), method  # was 3e27 with 1000 in the input
        far = np.abs(got[6:] - expected[6:])
        assert far.max() < 1e-3 * float(clean.data.max()), method  # slices away from it are untouched


def test_ct_output_of_super_resolve_never_goes_below_the_inputs_minimum():
    volume = small(read_volume(CT_3MM))
    low, high = int(volume.data.min()), int(volume.data.max())
    for method in ("tricubic", "trilinear"):  # cubic overshoots at every air/skin edge
        out = super_resolve(volume, factor=3, method=method, device="cpu", keep_dtype=False)
        assert out.data.min() >= low and out.data.max() <= high, method


def test_a_bounded_ct_map_keeps_outputs_within_the_inputs_minimum_and_maximum():
    volume = small(read_volume(CT_3MM))
    low, high = int(volume.data.min()), int(volume.data.max())
    mapping = intensity_map(volume.data, bounded=True)
    assert (mapping.floor, mapping.ceiling) == (low, high)
    values = mapping.denormalise(np.array([-0.1, 0.5, 1.2, np.nan], np.float32))
    assert values.min() == low and values.max() == high and np.isfinite(values).all()
    assert mapping.clip_report()["output_clamped"] == 3
    finish_low, finish_high = output_bounds(mapping, np.dtype(np.int16))
    assert (finish_low, finish_high) == (low, high)
    assert intensity_map(volume.data).floor is None  # unbounded unless asked (today's inference calls)


def test_ct_output_of_the_fast_model_path_never_goes_below_the_inputs_minimum(tiny_model):
    volume = small(read_volume(CT_3MM))
    out = super_resolve(volume, factor=3, model=tiny_model, device="cpu")
    assert out.data.min() >= volume.data.min() and out.data.max() <= volume.data.max()


def test_mr_output_is_floored_at_the_inputs_minimum_but_not_capped():
    data = read_volume(MR_3MM).data
    mapping = intensity_map(data, bounded=True)
    assert mapping.modality == "MR" and mapping.floor == float(data.min()) and mapping.ceiling is None
    span = mapping.high - mapping.low
    out = mapping.denormalise(np.array([-5.0, 1.5], np.float32))
    assert out[0] == data.min() and out[1] == pytest.approx(mapping.low + 1.5 * span)


def test_what_normalisation_clips_is_counted_and_nan_reads_as_the_lowest_value():
    ct = np.full((4, 8, 8), 40.0, np.float32)
    ct[0, 0, :3] = [-2000.0, 5000.0, 3500.0]  # below air, metal
    ct[1, 1, :2] = [np.nan, np.inf]
    mapping = intensity_map(ct, "CT")
    assert mapping.clip_report() == {"input_outside_range": 3, "input_not_finite": 2}
    normalised = mapping.normalise(ct)
    assert np.isfinite(normalised).all() and normalised[1, 1, 0] == 0.0 and normalised[1, 1, 1] == 4095 / 4096
    assert np.isnan(ct[1, 1, 0])  # the input is not changed


def test_mr_percentiles_ignore_nan_and_huge_values():
    data = np.tile(np.linspace(0, 1000, 64, dtype=np.float32), (8, 64, 1))
    data[:, :4] = np.nan
    data[2, 10, 10] = 3e38
    mapping = intensity_map(data, "MR")
    assert 0 <= mapping.low < 20 and 980 < mapping.high <= 1000
    assert mapping.normalise(data).max() == pytest.approx(6.0, rel=1e-6)  # MR_SPAN


def test_ct_normalisation_is_unchanged_for_ordinary_values():
    """The bundled weights were trained with (clip(HU, -1024, 3071) + 1024) / 4096 in float32."""
    data = read_volume(CT_3MM).data
    old = (np.clip(np.asarray(data, np.float32), -1024.0, 3071.0) + np.float32(1024.0)) / np.float32(4096.0)
    np.testing.assert_array_equal(intensity_map(data).normalise(data), old)


def test_an_integer_ct_has_no_non_finite_voxels_and_its_output_clamps_are_counted(tiny_model):
    volume = small(read_volume(CT_3MM))
    assert volume.data.dtype.kind == "i" and intensity_map(volume.data).clip_report() == {}
    record = super_resolve(volume, factor=3, model=tiny_model, device="cpu").metadata["super_resolution"]
    assert set(record["clipped"]) == {"output_clamped"} and record["clipped"]["output_clamped"] > 0
