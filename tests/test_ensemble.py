"""The z self-ensemble: a second pass on the scan reversed along z, averaged with the first."""

import numpy as np
import pytest

from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.model.evaluate import evaluate_volume
from napari_cycleinr.model.infer import InferenceOptions, predict, super_resolve
from napari_cycleinr.volume import Volume


def reversed_z(volume: Volume) -> Volume:
    return volume.replace(data=np.ascontiguousarray(volume.data[::-1]))


@pytest.mark.parametrize("fast", [True, False])
def test_ensemble_is_the_mean_with_the_mirrored_scan(ct_volume, tiny_model, fast):
    options = InferenceOptions(fast=fast, tile=64)
    run = {"factor": 2.5, "model": tiny_model, "device": "cpu", "keep_dtype": False, "options": options}
    plain = super_resolve(ct_volume, **run).data
    mirrored = super_resolve(reversed_z(ct_volume), **run).data[::-1]
    assert np.abs(plain - mirrored).max() > 1.0  # the model is not symmetric in z, so there is something to average
    both = super_resolve(ct_volume, ensemble=True, **run)
    np.testing.assert_allclose(both.data, (plain + mirrored) / 2, atol=1e-3)
    assert both.metadata["super_resolution"]["ensemble"] == "z mirror, 2 passes"
    assert both.affine.tolist() == super_resolve(ct_volume, **run).affine.tolist()


@pytest.mark.parametrize("slices", [2, 3, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_few_slices_of_any_type(tiny_model, slices, dtype):
    data = np.random.default_rng(slices).normal(0, 300, size=(slices, 12, 14)).astype(dtype)
    volume = Volume.from_spacing(data, (5.0, 1.0, 1.0))
    run = {"factor": 2.5, "model": tiny_model, "device": "cpu", "keep_dtype": False}
    both = super_resolve(volume, ensemble=True, **run).data
    plain = super_resolve(volume, **run).data
    mirrored = super_resolve(reversed_z(volume), **run).data[::-1]
    np.testing.assert_allclose(both, (plain + mirrored) / 2, atol=1e-3)


def test_integer_output_is_rounded_once_more_and_no_further(ct_volume, tiny_model):
    run = {"factor": 3, "model": tiny_model, "device": "cpu"}
    exact = super_resolve(ct_volume, ensemble=True, keep_dtype=False, **run).data
    rounded = super_resolve(ct_volume, ensemble=True, **run).data
    assert rounded.dtype == ct_volume.data.dtype
    assert np.abs(rounded - exact).max() <= 0.75 + 1e-3  # the first pass's rounding, halved, plus the last


def test_progress_counts_both_passes_and_cancel_stops_the_second(ct_volume, tiny_model):
    calls = []
    super_resolve(ct_volume, factor=2, model=tiny_model, device="cpu", progress=lambda d, t: calls.append((d, t)))
    single = calls[-1][1]
    calls.clear()
    super_resolve(
        ct_volume, factor=2, model=tiny_model, device="cpu", ensemble=True, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (2 * single, 2 * single) and [d for d, _ in calls] == list(range(1, 2 * single + 1))
    seen = []
    with pytest.raises(Cancelled):
        super_resolve(
            ct_volume, factor=2, model=tiny_model, device="cpu", ensemble=True,
            progress=lambda d, t: seen.append(d), cancel=lambda: len(seen) > single,
        )
    assert len(seen) == single + 1


def test_interpolation_has_no_ensemble(ct_volume):
    with pytest.raises(CycleINRError, match="cycleinr method"):
        super_resolve(ct_volume, factor=2, method="tricubic", ensemble=True)


@pytest.mark.parametrize("slices", [2, 3, 5, 7, 30])
def test_predict_mirrored_is_the_answer_on_the_reversed_input(tiny_model, slices):
    lr = np.random.default_rng(slices).normal(size=(slices, 20, 24)).astype(np.float32)
    positions = (np.arange(2 * slices) + 0.5) / 2 - 0.5
    direct = predict("cycleinr", lr, positions, 0.5, mirrored=True, model=tiny_model)
    by_hand = predict("cycleinr", lr[::-1].copy(), positions, 0.5, model=tiny_model)[::-1]
    np.testing.assert_allclose(direct, by_hand, atol=1e-5)


def test_evaluate_scores_the_ensemble_with_and_without_consistency(ct_volume, tiny_model):

    result = evaluate_volume(
        ct_volume, 3, "average", {"cycleinr": tiny_model}, ["tricubic", "cycleinr"], device="cpu",
        consistency=True, ensemble=True, keep_outputs=True,
    )
    assert list(result["methods"]) == ["tricubic", "cycleinr", "cycleinr+ens", "cycleinr+dc", "cycleinr+ens+dc"]
    outputs = result["outputs"]
    assert np.abs(outputs["cycleinr+ens"] - outputs["cycleinr"]).max() > 0.1  # HU
    for row in result["methods"].values():
        assert np.isfinite(row["psnr"]) and row["seconds"] >= 0
