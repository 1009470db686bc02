import numpy as np
import pytest
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.consistency import (
    MAX_SMOOTHING,
    ConsistencyOptions,
    consistency_residual,
    enforce_consistency,
    make_consistent,
    output_degradation,
)
from napari_cycleinr.model.degrade import KINDS
from napari_cycleinr.model.infer import super_resolve
from tests.conftest import CT_HEAD


def _thin_and_thick(profile: str, factor: int = 4):
    thin = read_volume(CT_HEAD, axis="z").data[:80, 16:48, 16:48].astype(np.float64)
    w = output_degradation(thin.shape[0] // factor, thin.shape[0], profile).numpy()
    return thin, np.einsum("io,ohw->ihw", w, thin)


@pytest.mark.parametrize("profile", KINDS)
def test_projection_reproduces_the_input_and_never_moves_away_from_the_truth(profile):
    thin, thick = _thin_and_thick(profile)
    rng = np.random.default_rng(0)
    guess = thin + rng.normal(0, 30, thin.shape)  # a wrong super-resolution, 30 HU off everywhere
    error_before = np.sqrt(np.mean((guess - thin) ** 2))
    report = enforce_consistency(guess, thick, profile)
    assert report.before.rms > 5 and report.after.rms < 1e-6
    assert consistency_residual(guess, thick, profile).rms < 1e-6
    assert np.sqrt(np.mean((guess - thin) ** 2)) < error_before  # the truth lies in the constraint set


def test_integer_outputs_are_rounded_with_a_residual_below_the_rounding_step(tiny_model):
    volume = read_volume(CT_HEAD)
    volume = volume.replace(data=volume.data[::4][:20, :40, :40].copy())
    result = super_resolve(volume, factor=3, model=tiny_model, device="cpu")
    before = consistency_residual(result.data, volume.data)
    report = make_consistent(result, volume)
    assert result.data.dtype == volume.data.dtype
    assert report.before.rms == pytest.approx(before.rms)
    assert report.after.max <= 0.5 + 1e-6 and report.after.rms < report.before.rms
    assert result.metadata["super_resolution"]["data_consistency"]["residual_after"]["max"] <= 0.5


def test_thicker_slices_overlap_and_stay_solvable():
    w = output_degradation(10, 40, "gaussian", thickness=2.0)
    assert torch.allclose(w.sum(dim=1), torch.ones(10, dtype=w.dtype))
    thin, _ = _thin_and_thick("average")
    n = thin.shape[0]
    thick = np.einsum("io,ohw->ihw", output_degradation(n // 4, n, "gaussian", 2.0).numpy(), thin)
    out = np.zeros_like(thin)
    assert enforce_consistency(out, thick, "gaussian", 2.0).after.rms < 1e-3


@pytest.mark.parametrize(
    "shape, profile, thickness, message",
    [((10, 8, 8), "average", 1.0, "not a z-super-resolution"), ((40, 8, 8), "box", 1.0, "unknown slice profile"),
     ((40, 8, 8), "average", 0.0, "thickness")],
)
def test_bad_requests_are_explained(shape, profile, thickness, message):
    with pytest.raises(CycleINRError, match=message):
        enforce_consistency(np.zeros(shape), np.zeros((10, 8, 8)), profile, thickness)


@pytest.mark.parametrize("degradation", ["average", "skip"])
def test_evaluate_scores_the_consistent_output_which_is_never_worse(tiny_model, degradation):
    from napari_cycleinr.model.evaluate import evaluate_volume

    volume = read_volume(CT_HEAD, axis="z")
    volume = volume.replace(data=volume.data[:60, 8:56, 8:56].copy())
    models = {"tiny": tiny_model}
    result = evaluate_volume(volume, 4.0, degradation, models, ["tricubic", "tiny"], device="cpu", consistency=True)
    assert set(result["methods"]) == {"tricubic", "tiny", "tiny+dc"}  # interpolations get no +dc row
    assert result["methods"]["tiny+dc"]["psnr"] >= result["methods"]["tiny"]["psnr"] - 1e-6


def test_smoothing_corrects_the_coarse_residual_only_and_tiles_do_not_show():
    from scipy import ndimage

    thin, thick = _thin_and_thick("average")
    noisy = thick + np.random.default_rng(1).normal(0, 20, thick.shape)  # the thick slices' own noise
    guess = ndimage.gaussian_filter(thin, (2, 0, 0))  # an over-smooth answer
    w = output_degradation(thick.shape[0], thin.shape[0], "average").numpy()
    def blur(v):
        return ndimage.gaussian_filter(v, (0, 1.5, 1.5), mode="reflect")

    whole = guess.copy()
    report = enforce_consistency(whole, noisy, "average", tile=64, smoothing=1.5)
    before = noisy - np.einsum("io,ohw->ihw", w, guess)
    after = noisy - np.einsum("io,ohw->ihw", w, whole)
    np.testing.assert_allclose(after, before - blur(before), atol=1e-6)  # the coarse part is gone, the fine
    assert 10 < report.after.rms < report.before.rms  # grain (mostly the thick slices' noise) is left alone
    assert report.as_dict()["smoothing_pixels"] == 1.5 and "sigma 1.5 px" in report.summary()

    tiled = guess.copy()
    enforce_consistency(tiled, noisy, "average", tile=5, smoothing=1.5)  # 5-row tiles, 6-row halo
    np.testing.assert_allclose(tiled, whole, atol=1e-9)

    exact = guess.copy()
    enforce_consistency(exact, noisy, "average")
    assert np.std(whole - guess) < np.std(exact - guess)  # it adds less of the noise


@pytest.mark.parametrize("smoothing", [-1.0, float("nan"), MAX_SMOOTHING + 1])
def test_bad_smoothing_is_explained(smoothing):
    with pytest.raises(CycleINRError, match="smoothing"):
        enforce_consistency(np.zeros((40, 8, 8)), np.zeros((10, 8, 8)), smoothing=smoothing)
    with pytest.raises(CycleINRError, match="smoothing"):
        ConsistencyOptions(smoothing=smoothing)
    with pytest.raises(CycleINRError, match="slice profile"):
        ConsistencyOptions("box")


def test_the_widget_offers_the_same_range():
    from napari_cycleinr._widget import SMOOTHING_MAX

    assert SMOOTHING_MAX == MAX_SMOOTHING


@pytest.mark.parametrize(("profile", "spread"), [("average", 2.0), ("gaussian", 2.0), ("skip", 0.0)])
def test_the_correction_draws_no_lines_at_the_slab_period(profile, spread):
    """Issue #21: under a slab average the orthogonal step adds one constant per slab, a step at every border;
    spread along z it changes as much inside slabs as across their borders, and still reproduces the input."""
    thin, thick = _thin_and_thick(profile)
    z = np.arange(thin.shape[0], dtype=np.float64)[:, None, None]
    guess = thin + 20 * np.sin(z / 7) + 10 * np.cos(z / 3)  # an error along z that the slabs can see
    corrected = guess.copy()
    report = enforce_consistency(corrected, thick, profile)
    assert report.spread == spread and report.as_dict()["z_spread_slices"] == spread
    assert report.after.rms < 1e-6
    steps = np.abs(np.diff(corrected - guess, axis=0)).mean(axis=(1, 2))
    border = np.arange(1, thin.shape[0]) % 4 == 0  # between slices 4k - 1 and 4k
    if profile != "skip":
        assert steps[border].mean() < 1.5 * steps[~border].mean(), steps
