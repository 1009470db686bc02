import threading

import numpy as np
import pytest
import torch

from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.adapt import AdaptOptions, adapt_model, pair_shape
from napari_cycleinr.model.degrade import degrade
from tests.conftest import MR_3MM

FAST = dict(steps=6, batch=2, crop=32, thick_slices=4, validation_pairs=2, threads=2)


@pytest.fixture
def thick_mr():
    """A real MR volume made 4x thicker along z (5 slices of 12 mm), as a user's thick scan."""
    volume = read_volume(MR_3MM)
    data = degrade(volume.data.astype(np.float32), 4.0, "average")
    affine = volume.affine.copy()
    affine[:3, 0] *= 4
    return volume.replace(data=data, affine=affine)


def test_adaptation_trains_a_copy_and_reports(thick_mr, tiny_model):
    original = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    seen = []
    adapted, report = adapt_model(
        thick_mr, factor=4, model=tiny_model, options=AdaptOptions(**FAST), device="cpu",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert all(torch.equal(original[k], v) for k, v in tiny_model.state_dict().items())  # the input is untouched
    assert seen == [(i, 6) for i in range(1, 7)]
    assert report.steps == 6 and report.factor == 4 and np.isfinite(report.validation_l1_after)
    assert report.kept == (report.validation_l1_after < report.validation_l1_before)
    changed = any(not torch.equal(original[k], v) for k, v in adapted.state_dict().items())
    assert changed == report.kept
    assert adapted.info["adaptation"]["steps"] == 6
    assert ("adapted to this scan" in adapted.source) == report.kept
    assert "held-out in-plane L1" in report.summary()


def test_a_time_budget_bounds_the_run(thick_mr, tiny_model):
    options = AdaptOptions(**{**FAST, "steps": None, "minutes": 0.05})
    _, report = adapt_model(thick_mr, factor=2.5, model=tiny_model, options=options, device="cpu")
    assert report.steps >= 1 and report.seconds < 3 + 10  # 3 s budget, plus one step at most


def test_cancel_stops_the_run(thick_mr, tiny_model):
    stop = threading.Event()
    with pytest.raises(Cancelled):
        adapt_model(
            thick_mr, factor=4, model=tiny_model, options=AdaptOptions(**FAST), device="cpu",
            progress=lambda done, total: stop.set() if done == 2 else None, cancel=stop.is_set,
        )


def test_pairs_fit_a_scan_with_few_slices():
    options = AdaptOptions(crop=48, thick_slices=8)
    assert pair_shape((5, 91, 117), 4.0, options) == (8, (5, 48))
    assert pair_shape((40, 512, 512), 5.0, options) == (8, (40, 48))
    with pytest.raises(CycleINRError, match="too small in-plane"):
        pair_shape((5, 9, 9), 4.0, options)


@pytest.mark.parametrize(
    "options, message",
    [(dict(profile="box"), "slice profile"), (dict(minutes=0), "minutes"), (dict(steps=0), "steps"),
     (dict(thickness=-1), "thickness")],
)
def test_bad_options_are_explained(options, message):
    with pytest.raises(CycleINRError, match=message):
        AdaptOptions(**options)
