import numpy as np
import pytest
from scipy import ndimage

from napari_cycleinr.model.metrics import error_summary, psnr, snli, snli_parts, ssim


def test_psnr_of_a_known_error():
    reference = np.zeros((4, 8, 8))
    test = reference + 40.95  # 1 % of the 4095 HU window everywhere
    assert psnr(reference, test) == pytest.approx(40.0, abs=1e-6)
    assert psnr(reference, reference) == float("inf")


def test_error_summary_slab_by_slab_is_the_whole_volume_figure(ct_volume):
    reference = ct_volume.data.astype(np.float64)
    test = reference + np.random.default_rng(0).normal(0, 50, reference.shape)
    test[3, :10, :10] = 9000.0  # clipped to the window's top, 3071 HU, like the reference's side
    clipped = np.clip(reference, -1024, 3071) - np.clip(test, -1024, 3071)
    whole = 10 * np.log10(4095.0**2 / np.mean(clipped**2))
    for slices in (1, 7, 64):
        summary = error_summary(reference, test, slices=slices)
        assert summary["psnr"] == pytest.approx(whole, abs=1e-9)
        assert summary["mean_abs_error"] == pytest.approx(np.mean(np.abs(clipped)), rel=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        error_summary(reference, test[:-1])


def test_ssim_is_one_for_identical_and_lower_for_noisy(ct_volume):
    data = ct_volume.data.astype(np.float32)
    assert ssim(data, data) == pytest.approx(1.0)
    noisy = data + np.random.default_rng(0).normal(0, 100, data.shape)
    assert ssim(data, noisy) < 0.95


def test_snli_ranks_every_third_slice_smoothed_worse(ct_volume):
    data = ct_volume.data.astype(np.float32)
    smoothed = data.copy()
    for i in range(1, data.shape[0], 3):
        smoothed[i] = ndimage.gaussian_filter(data[i], 1.5)
    untouched, damaged = snli(data, "CT"), snli(smoothed, "CT")
    assert np.isfinite(untouched) and damaged > 1.5 * untouched


def test_snli_of_a_volume_without_body_is_nan():
    assert np.isnan(snli(np.full((5, 20, 20), -1000.0), "CT"))


def test_snli_parts_scale_with_the_noise_level_and_their_ratio_is_snli(ct_volume):
    data = ct_volume.data.astype(np.float32)
    jump, level = snli_parts(data, "CT")
    assert snli(data, "CT") == pytest.approx(jump / level)
    half_jump, half_level = snli_parts(0.5 * data, threshold=-250.0)  # the same body, half the texture
    assert (half_jump, half_level) == pytest.approx((0.5 * jump, 0.5 * level), rel=1e-4)


def test_reference_scores_use_the_report_window_and_survive_empty_scans():
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.model.evaluate import reference_scores, scores_summary
    from tests.conftest import MR_3MM

    mr = read_volume(MR_3MM).data.astype(np.float32)
    blurred = mr + np.random.default_rng(0).normal(0, 5, mr.shape).astype(np.float32)
    scores = reference_scores(mr, blurred, None)  # MR is guessed: no air at -1000
    low, high = np.percentile(mr, (0.5, 99.5))
    assert scores["modality"] == "MR" and scores["window"] == pytest.approx([low, high])
    assert scores["psnr"] == pytest.approx(psnr(mr, blurred, (low, high)))
    assert "dB" in scores_summary(scores) and " HU" not in scores_summary(scores)

    air = np.full((6, 16, 16), -1000.0, np.float32)
    empty = reference_scores(air, air + 1, "CT")
    assert empty["snli_output"] is None and "n/a" in scores_summary(empty)
