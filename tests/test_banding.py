"""The slab-period banding measure (metrics.banding) on a real thin CT and on what resampling makes of it."""

import numpy as np
import pytest

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.metrics import banding, slab_border_pairs
from napari_cycleinr.slice_profile import profile_weights
from tests.conftest import DATA

LIDC = DATA / "ct_lidc0002_crop_128x128x40_1p25mm.nii.gz"


def test_border_pairs_follow_the_cell_centred_grid():
    assert slab_border_pairs(10, 5).tolist() == [False] * 4 + [True] + [False] * 4
    assert slab_border_pairs(5, 2.5).tolist() == [False, True, False, False]  # centres 0.2 0.6 1.0 1.4 1.8
    assert not slab_border_pairs(3, 1.0e9).any()


def thin_and_thick(factor):
    thin = read_volume(LIDC).data.astype(np.float32)
    matrix = profile_weights(thin.shape[0], factor, "average").astype(np.float32)
    thick = np.tensordot(matrix, thin, axes=(1, 0))
    return thin[: int(len(matrix) * factor)], thick


@pytest.mark.parametrize("factor", [4, 5])
def test_a_real_thin_scan_is_flat_and_a_staircase_is_not(factor):
    thin, thick = thin_and_thick(factor)
    assert banding(thin, factor) == pytest.approx(1.0, abs=0.1)
    staircase = np.repeat(thick, factor, axis=0)  # every acquired slab copied: lines at the slab period
    assert banding(staircase, factor) > 5.0


def test_linear_interpolation_of_slabs_has_no_lines():
    factor = 4
    thin, thick = thin_and_thick(factor)
    positions = (np.arange(len(thin)) + 0.5) / factor - 0.5
    lower = np.clip(np.floor(positions).astype(int), 0, len(thick) - 2)
    t = np.clip(positions - lower, 0, 1)[:, None, None]
    linear = thick[lower] * (1 - t) + thick[lower + 1] * t
    interior = linear[factor:-factor]  # whole slabs off each end, where the interpolation is clamped flat
    assert banding(interior, factor) == pytest.approx(1.0, abs=0.12)


def test_undefined_without_pairs_inside_a_slab():
    thin, _ = thin_and_thick(4)
    assert np.isnan(banding(thin, 1.0))
    assert np.isnan(banding(np.full_like(thin, -1000.0), 4))  # no body


def test_evaluate_and_reference_scores_report_banding_beside_snli():
    from napari_cycleinr.model.evaluate import evaluate_volume, format_table, reference_scores, scores_summary

    volume = read_volume(LIDC)
    result = evaluate_volume(volume, 4.0, "average", {}, ["tricubic"])
    assert result["reference_banding"] == pytest.approx(1.0, abs=0.1)
    assert 0.9 < result["methods"]["tricubic"]["banding"] < 1.3
    assert "banding" in format_table([result]).splitlines()[0]
    thin, thick = thin_and_thick(4)
    staircase = np.repeat(thick, 4, axis=0) + np.random.default_rng(0).normal(0, 2, (len(thin), *thin.shape[1:]))
    scores = reference_scores(thin, staircase, "CT", factor=4.0)
    assert scores["banding_output"] > 5 and scores["banding_reference"] == pytest.approx(1.0, abs=0.1)
    assert "; banding " in scores_summary(scores)
    assert "banding_output" not in reference_scores(thin, staircase, "CT")  # no factor, no banding


def test_banding_can_be_limited_to_some_pairs():
    """Flat ends (what every method extrapolates beyond the outermost acquired slices) pull the inside mean down;
    left out, a volume changing evenly elsewhere reads 1.0."""
    steps = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11], dtype=np.float32)  # flat first and last pairs
    volume = np.broadcast_to(100.0 + 10.0 * steps[:, None, None], (14, 16, 16)).copy()
    middle = np.ones(13, dtype=bool)
    middle[[0, -1]] = False
    assert banding(volume, 4, threshold=0.0) > 1.1
    assert banding(volume, 4, threshold=0.0, pairs=middle) == pytest.approx(1.0)
    assert banding(volume, 4, threshold=0.0, pairs=np.ones(13, dtype=bool)) == banding(volume, 4, threshold=0.0)
