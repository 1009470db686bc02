import numpy as np
import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.degrade import KINDS, degradation_matrix, degrade


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ratio", [1.5, 2.0, 2.5, 4.0, 5.3])
def test_rows_are_normalised_and_local(kind, ratio):
    matrix = degradation_matrix(40, ratio, kind)
    assert matrix.shape == (int(40 / ratio + 1e-9), 40)
    assert torch.allclose(matrix.sum(1), torch.ones(matrix.shape[0], dtype=torch.float64))
    centres = (torch.arange(matrix.shape[0], dtype=torch.float64) + 0.5) * ratio - 0.5
    mean_position = matrix @ torch.arange(40, dtype=torch.float64)
    # thin cells are represented by their centres, so a box edge inside a cell shifts the mean slightly;
    # the Gaussian's tails are cut at the stack's ends, so only inner rows are centred exactly
    inner = slice(1, -1) if kind == "gaussian" else slice(None)
    assert torch.allclose(mean_position[inner], centres.clamp(0, 39)[inner], atol=0.1)


def test_slab_average_of_integer_ratio_is_a_plain_mean():
    thin = np.random.default_rng(0).random((12, 3, 3)).astype(np.float32)
    thick = degrade(thin, 3.0, "average")
    assert np.allclose(thick, thin.reshape(4, 3, 3, 3).mean(1), atol=1e-6)


def test_skip_at_odd_ratio_picks_the_middle_slice():
    thin = np.random.default_rng(1).random((15, 2, 2)).astype(np.float32)
    assert np.allclose(degrade(thin, 3.0, "skip"), thin[1::3], atol=1e-6)


def test_gaussian_is_wider_than_skip_and_narrower_than_twice_the_box():
    row = degradation_matrix(60, 4.0, "gaussian")[5]
    positions = torch.arange(60, dtype=torch.float64)
    spread = torch.sqrt((row * (positions - (row * positions).sum()) ** 2).sum())
    assert 1.0 < float(spread) < 4.0  # sigma = FWHM / 2.355 = 1.7 slices


def test_non_integer_thickness_differs_from_spacing():
    wide = degradation_matrix(40, 4.0, "average", thickness=6.0)
    contiguous = degradation_matrix(40, 4.0, "average")
    assert (wide[3] > 0).sum() > (contiguous[3] > 0).sum()


def test_unknown_kind_and_too_few_slices_are_refused():
    with pytest.raises(CycleINRError, match="unknown degradation"):
        degradation_matrix(10, 2.0, "median")
    with pytest.raises(CycleINRError, match="too few"):
        degradation_matrix(3, 5.0)


def test_torch_input_keeps_gradients():
    thin = torch.rand(1, 10, 4, 4, requires_grad=True)
    degrade(thin, 2.5, "gaussian").sum().backward()
    assert thin.grad is not None and torch.all(thin.grad >= 0)
