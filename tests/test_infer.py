import numpy as np
import pytest

from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.model.degrade import degrade
from napari_cycleinr.model.infer import super_resolve
from napari_cycleinr.volume import Volume


def _world(volume, index):
    return volume.affine @ np.array([*index, 1.0])


@pytest.mark.parametrize("factor", [2.0, 2.5, 4.0, 5.3])
def test_output_geometry_covers_the_input_extent(ct_volume, tiny_model, factor):
    result = super_resolve(ct_volume, factor=factor, model=tiny_model, device="cpu")
    n_in = ct_volume.shape[0]
    assert result.shape == (int(round(n_in * factor)), *ct_volume.shape[1:])
    assert result.data.dtype == ct_volume.data.dtype
    assert result.spacing[0] == pytest.approx(ct_volume.spacing[0] * n_in / result.shape[0])
    assert result.spacing[1:] == pytest.approx(ct_volume.spacing[1:])
    assert np.allclose(_world(result, (-0.5, 0, 0)), _world(ct_volume, (-0.5, 0, 0)))
    assert np.allclose(_world(result, (result.shape[0] - 0.5, 7, 9)), _world(ct_volume, (n_in - 0.5, 7, 9)))
    assert result.file_axes == ct_volume.file_axes
    assert result.metadata["super_resolution"]["factor"] == pytest.approx(result.shape[0] / n_in)


def test_target_spacing_and_float_output(ct_volume, tiny_model):
    result = super_resolve(ct_volume, spacing=1.0, model=tiny_model, device="cpu", keep_dtype=False)
    assert result.shape[0] == 90 and result.data.dtype == np.float32


@pytest.mark.parametrize("method", ["trilinear", "tricubic", "cycleinr"])
def test_degrading_the_output_returns_close_to_the_input(ct_volume, method):
    """The output of the bundled model (or a baseline), slab-averaged back onto the acquired slices,
    reproduces the input (HU)."""
    result = super_resolve(ct_volume, factor=2.5, method=method, device="cpu", keep_dtype=False)
    back = degrade(result.data, result.shape[0] / ct_volume.shape[0], "average", n_thick=ct_volume.shape[0])
    error = np.abs(back - ct_volume.data.astype(np.float32))
    assert np.median(error) < 15.0  # HU; linear interpolation is only consistent up to its smoothing
    assert np.mean(error) < 60.0


def test_progress_reaches_the_end_and_cancel_stops(ct_volume, tiny_model):
    calls = []
    super_resolve(ct_volume, factor=2, model=tiny_model, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1]
    with pytest.raises(Cancelled):
        super_resolve(ct_volume, factor=2, model=tiny_model, device="cpu", cancel=lambda: True)


def test_bad_volumes_are_refused(tiny_model):
    data = np.zeros((6, 8, 8), np.float32)
    data[2, 3, 3] = np.nan
    with pytest.raises(CycleINRError, match="NaN or infinite"):
        super_resolve(Volume.from_spacing(data, (5, 1, 1)), factor=2, model=tiny_model, device="cpu")
    with pytest.raises(CycleINRError, match="at least 2 slices"):
        super_resolve(Volume.from_spacing(np.zeros((1, 8, 8)), (5, 1, 1)), factor=2, model=tiny_model, device="cpu")
    with pytest.raises(CycleINRError, match="positive"):
        Volume.from_spacing(np.zeros((4, 8, 8)), (0, 1, 1))
    with pytest.raises(CycleINRError, match="3 dimensions"):
        Volume.from_spacing(np.zeros((8, 8)), (1, 1, 1))
    with pytest.raises(CycleINRError, match="unknown device"):
        super_resolve(Volume.from_spacing(np.zeros((4, 8, 8)), (5, 1, 1)), factor=2, device="tpu")


def test_mr_volumes_are_normalised_by_percentiles(tiny_model):
    from napari_cycleinr.io import read_volume
    from tests.conftest import MR_3MM

    volume = read_volume(MR_3MM)
    result = super_resolve(volume, factor=2, model=tiny_model, device="cpu")
    assert result.metadata["super_resolution"]["modality"] == "MR"
    assert result.data.min() >= volume.data.min() - 1 and result.data.max() <= volume.data.max() * 1.2 + 1
