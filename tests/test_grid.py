import numpy as np
import pytest

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.grid import z_grid
from napari_cycleinr.volume import Volume, resampled_z_affine


@pytest.mark.parametrize("factor, n_out", [(2, 60), (2.5, 75), (4, 120), (5.3, 159)])
def test_output_count_and_spacing_keep_the_extent(factor, n_out):
    grid = z_grid(30, 3.0, factor=factor)
    assert grid.n_out == n_out
    assert grid.n_out * grid.spacing_out == pytest.approx(30 * 3.0)
    assert grid.spacing_out == pytest.approx(3.0 / factor, rel=0.01)


def test_positions_are_cell_centred():
    grid = z_grid(10, 5.0, spacing=1.0)
    positions = grid.positions()
    assert grid.n_out == 50
    # the first output cell starts where the first input cell starts (index -0.5)
    assert positions[0] - 0.5 * grid.z_ratio == pytest.approx(-0.5)
    assert positions[-1] + 0.5 * grid.z_ratio == pytest.approx(9.5)
    # every 5th output centre sits at an input centre for odd integer factors
    assert np.allclose(positions[2::5], np.arange(10))


def test_affine_of_the_new_grid_maps_the_same_extent():
    volume = Volume.from_spacing(np.zeros((10, 4, 4)), (5.0, 0.7, 0.7), origin=(-100.0, 20.0, 30.0))
    grid = z_grid(10, 5.0, factor=4)
    affine = resampled_z_affine(volume.affine, grid.z_ratio)
    first_edge_old = volume.affine @ [-0.5, 0, 0, 1]
    first_edge_new = affine @ [-0.5, 0, 0, 1]
    last_edge_old = volume.affine @ [9.5, 0, 0, 1]
    last_edge_new = affine @ [grid.n_out - 0.5, 0, 0, 1]
    assert np.allclose(first_edge_old, first_edge_new) and np.allclose(last_edge_old, last_edge_new)
    assert np.linalg.norm(affine[:3, 0]) == pytest.approx(1.25)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"factor": 1.0}, "above 1"),
        ({"factor": 0.0}, "above 1"),
        ({"factor": -1.0}, "above 1"),
        ({"factor": float("nan")}, "above 1"),
        ({"factor": float("inf")}, "above 1"),
        ({"factor": 1000.0}, "at most 16"),
        ({"spacing": 3.0}, "not finer"),
        ({"spacing": 5.0}, "not finer"),
        ({"spacing": 0.0}, "positive"),
        ({}, "either a factor"),
        ({"factor": 2.0, "spacing": 1.0}, "either a factor"),
    ],
)
def test_bad_targets_are_refused(kwargs, message):
    with pytest.raises(CycleINRError, match=message):
        z_grid(30, 3.0, **kwargs)


def test_one_slice_is_refused():
    with pytest.raises(CycleINRError, match="at least 2 slices"):
        z_grid(1, 3.0, factor=2)
