"""Adapt to this scan and exact data consistency, through the widget's job (`_runner`) and the dock widget in a
real napari viewer (run under Xvfb: `xvfb-run -a python -m pytest`). Real small CT crops and a tiny real model;
adaptation runs a fixed, small number of steps so that each test takes seconds."""

from __future__ import annotations

import re
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_cycleinr._layers import KEY
from napari_cycleinr._runner import (
    ADAPT_STEPS,
    GPU_MEMORY_FALLBACK_NOTICE,
    STEPS_PER_TARGET,
    Job,
    execute,
    job_total,
    plan_targets,
)
from napari_cycleinr._widget import SuperResolutionWidget
from napari_cycleinr.io import read_volume
from napari_cycleinr.model import adapt, checkpoint, infer
from napari_cycleinr.model.consistency import consistency_residual
from napari_cycleinr.runtime import devices
from tests.conftest import CT_3MM
from tests.test_widget import (
    add_volume,
    assert_no_traceback_notifications,
    crop,
    messages,
    notes,
    run,
    use_checkpoint,
    viewer_and_widget,
)

__all__ = ["notes", "viewer_and_widget"]  # fixtures of tests/test_widget.py

ADAPTED = "adapted for 2 steps"


@pytest.fixture
def small_ct():
    """The real 3 mm CT, 10 slices of a 48 x 48 in-plane centre crop (int16, HU)."""
    return crop(read_volume(CT_3MM), 48, slices=10)


def make_job(volume, values="2, 3", **kwargs) -> Job:
    targets = plan_targets(volume.shape[0], volume.spacing[0], "factor", values)
    return Job(volume=volume, input_name="ct", targets=targets, device="cpu", **kwargs)


def updates_of(job, cancelled=lambda: False):
    seen = []
    outcome = execute(job, seen.append, cancelled)
    return outcome, seen


def record_of(output) -> dict:
    return output.volume.metadata["super_resolution"]


def test_adapt_and_exact_consistency_in_one_job(small_ct, tiny_checkpoint):
    job = make_job(small_ct, checkpoint=str(tiny_checkpoint), adapt_steps=2, exact_consistency=True)
    outcome, seen = updates_of(job)
    assert outcome.error is None and not outcome.cancelled

    assert [(o.name, o.role, o.volume.shape) for o in outcome.outputs] == [
        ("ct_SRx2", "super_resolved", (20, 48, 48)),
        ("ct_SRx3", "super_resolved", (30, 48, 48)),
    ]
    for output in outcome.outputs:
        sr = output.volume
        assert sr.data.dtype == np.int16
        record = record_of(output)
        # one adaptation for the job, at the largest target factor, recorded in every output
        assert record["adaptation"]["steps"] == 2 and record["adaptation"]["factor"] == 3
        assert record["adaptation"]["budget"] == {"steps": 2}
        assert record["adaptation"]["profile"] == "average"
        assert record["model_info"]["adaptation"]["steps"] == 2
        dc = record["data_consistency"]
        assert dc["profile"] == "average" and dc["thickness_over_spacing"] == 1.0
        # integer output: what is left is the rounding to whole HU, averaged over a slab
        assert dc["residual_after"]["max"] <= 0.5 + 1e-6
        assert dc["residual_before"]["rms"] > 1.0 > dc["residual_after"]["rms"]
        residual = consistency_residual(sr.data, small_ct.data)  # checked independently of the report
        assert residual.max <= 0.5 + 1e-6
        assert sr.metadata["nifti_header"]["descrip"].startswith("napari-cycleinr")

    assert sum(n.startswith(ADAPTED) for n in outcome.notices) == 1
    assert [n.split(":")[0] for n in outcome.notices if "data consistency" in n] == ["SRx2", "SRx3"]

    total = job_total(job)
    assert total == ADAPT_STEPS + 2 * STEPS_PER_TARGET
    assert all(u.total == total for u in seen)
    done = [u.done for u in seen]
    assert done == sorted(done) and done[-1] == total
    adapting = [u for u in seen if u.message.startswith("adapting to this scan")]
    assert any(u.message == "adapting to this scan: step 1 of 2" for u in adapting)
    assert max(u.done for u in adapting) <= ADAPT_STEPS  # adaptation is its own phase, before the targets
    assert any(u.message.startswith(ADAPTED) and u.done == ADAPT_STEPS for u in seen)


def test_a_time_budget_shows_seconds(small_ct, tiny_checkpoint):
    job = make_job(small_ct, "2", checkpoint=str(tiny_checkpoint), adapt_minutes=0.03)  # 1.8 s
    outcome, seen = updates_of(job)
    assert outcome.error is None
    assert record_of(outcome.outputs[0])["adaptation"]["budget"] == {"minutes": 0.03}
    timed = [u.message for u in seen if re.fullmatch(r"adapting to this scan: \d s of 2", u.message)]
    assert timed and timed[0] == "adapting to this scan: 0 s of 2"
    done = [u.done for u in seen]
    assert done == sorted(done) and done[-1] == job_total(job)


def test_exact_consistency_alone_on_an_interpolation(small_ct):
    outcome, _ = updates_of(make_job(small_ct, "2", method="tricubic", exact_consistency=True))
    assert outcome.error is None
    (output,) = outcome.outputs
    record = record_of(output)
    assert "adaptation" not in record
    assert record["data_consistency"]["residual_after"]["max"] <= 0.5 + 1e-6
    assert consistency_residual(output.volume.data, small_ct.data).max <= 0.5 + 1e-6

    smoothed, _ = updates_of(
        make_job(small_ct, "2", method="tricubic", exact_consistency=True, consistency_smoothing=1.0)
    )
    record = record_of(smoothed.outputs[0])["data_consistency"]
    assert record["smoothing_pixels"] == 1.0 and record["residual_after"]["rms"] > 0.5  # the fine grain is kept


def test_cancel_during_adaptation_adds_nothing(small_ct, tiny_checkpoint):
    stop = threading.Event()

    def report(update):
        if update.message == "adapting to this scan: step 1 of 200":
            stop.set()

    job = make_job(small_ct, checkpoint=str(tiny_checkpoint), adapt_steps=200, exact_consistency=True)
    outcome = execute(job, report, stop.is_set)
    assert stop.is_set()
    assert outcome.cancelled and outcome.outputs == [] and outcome.error is None


@pytest.mark.parametrize("method", ["trilinear", "tricubic"])
def test_adaptation_needs_the_model(small_ct, method):
    outcome, seen = updates_of(make_job(small_ct, method=method, adapt_steps=2))
    assert outcome.error.startswith("adaptation needs the cycleinr method") and method in outcome.error
    assert outcome.outputs == [] and seen == []  # refused before any work


@pytest.mark.parametrize(
    "options, message",
    [
        ({"adapt_minutes": 0.0}, "minutes"),
        ({"adapt_steps": 0}, "steps"),
        ({"exact_consistency": True, "profile": "box"}, "slice profile"),
        ({"exact_consistency": True, "thickness": float("nan")}, "thickness"),
        ({"exact_consistency": True, "consistency_smoothing": -1.0}, "smoothing"),
    ],
)
def test_bad_options_are_explained_before_any_work(small_ct, tiny_checkpoint, options, message):
    outcome, seen = updates_of(make_job(small_ct, checkpoint=str(tiny_checkpoint), **options))
    assert message in outcome.error and outcome.outputs == [] and seen == []


def test_gpu_out_of_memory_while_adapting_goes_on_on_the_cpu(small_ct, tiny_checkpoint, monkeypatch):
    """'auto' resolves to a GPU that runs out of memory in the adaptation: the job goes on on the CPU."""
    real_resolve, real_adapt, real_load = infer.resolve_device, adapt.adapt_model, checkpoint.load_model
    calls = []

    def resolve_device(name):
        if isinstance(name, torch.device) or name == "cpu":
            return real_resolve(name)
        return torch.device("cuda")

    def adapt_model(volume, *, device="auto", **kwargs):
        calls.append(torch.device(device).type)
        if torch.device(device).type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_adapt(volume, device=device, **kwargs)

    monkeypatch.setattr(devices, "resolve_device", resolve_device)
    monkeypatch.setattr(adapt, "adapt_model", adapt_model)
    monkeypatch.setattr(checkpoint, "load_model", lambda path=None, device="cpu", profile=None: real_load(path, "cpu", profile))
    job = replace(make_job(small_ct, "2", checkpoint=str(tiny_checkpoint), adapt_steps=2), device="auto")
    outcome, _ = updates_of(job)
    assert outcome.error is None, outcome.error
    assert calls == ["cuda", "cpu"] and outcome.device == "cpu"
    assert GPU_MEMORY_FALLBACK_NOTICE in outcome.notices
    assert record_of(outcome.outputs[0])["device"] == "cpu"


# --- the dock widget -----------------------------------------------------------------------------------------


def hidden(widget) -> bool:
    return widget.native.isHidden()


def test_widget_adapts_and_makes_consistent(
    viewer_and_widget, qtbot, notes, tiny_checkpoint, small_ct, monkeypatch
):
    viewer, widget = viewer_and_widget
    widget._input.value = add_volume(viewer, small_ct, "ct")
    widget._target_kind.value = "factor"
    widget._values.value = "2.5"
    use_checkpoint(widget, tiny_checkpoint)
    assert hidden(widget._adapt_minutes) and hidden(widget._profile) and not hidden(widget._adapt)
    assert hidden(widget._thickness) and widget._thickness.native.text() == "same as spacing"
    assert hidden(widget._smoothing)

    widget._adapt.value = True
    assert not hidden(widget._adapt_minutes) and not hidden(widget._profile) and not hidden(widget._thickness)
    assert widget._adapt_minutes.value == 3.0
    assert (widget._adapt_minutes.min, widget._adapt_minutes.max) == (0.5, 60.0)
    widget._adapt_minutes.value = 0.5
    widget._exact.value = True
    assert not hidden(widget._smoothing) and widget._smoothing.value == 0.0
    widget._profile.value = "gaussian"
    widget._thickness.value = 1.5 * small_ct.spacing[0]  # thicker than their spacing: overlapping slices

    jobs = []
    make_job_from_the_controls = SuperResolutionWidget._make_job

    def fast_job(self):  # the job the controls make, with 2 steps instead of half a minute
        job = make_job_from_the_controls(self)
        jobs.append(job)
        return replace(job, adapt_steps=2)

    monkeypatch.setattr(SuperResolutionWidget, "_make_job", fast_job)
    run(widget, qtbot)
    monkeypatch.undo()
    (job,) = jobs
    assert job.adapt_minutes == 0.5 and job.exact_consistency and job.profile == "gaussian"
    assert job.consistency_smoothing == 0.0
    assert job.thickness == pytest.approx(1.5)
    assert widget._progress.value == widget._progress.max == ADAPT_STEPS + STEPS_PER_TARGET

    layer = viewer.layers["ct_SRx2.5"]
    assert layer.data.shape == (25, 48, 48)
    record = layer.metadata[KEY]["volume_metadata"]["super_resolution"]
    assert record["adaptation"]["steps"] == 2 and record["adaptation"]["profile"] == "gaussian"
    assert record["data_consistency"]["profile"] == "gaussian"
    assert record["data_consistency"]["thickness_over_spacing"] == pytest.approx(1.5)
    outcomes = messages(notes, "info")  # outcomes, not problems
    assert any(m.startswith(ADAPTED) for m in outcomes)
    assert any(m.startswith("SRx2.5: data consistency (gaussian profile)") for m in outcomes)
    assert widget._status.value == "added ct_SRx2.5"
    assert_no_traceback_notifications(notes)

    # Interpolation has nothing to adapt: the adapt controls hide, the profile stays for exact consistency.
    widget._method.value = "tricubic"
    assert hidden(widget._adapt) and hidden(widget._adapt_minutes) and not hidden(widget._profile)
    widget._exact.value = False
    assert hidden(widget._profile) and hidden(widget._thickness) and hidden(widget._smoothing)
    run(widget, qtbot)  # the adapt tick left from cycleinr is ignored, not an error
    rerun = viewer.layers["ct_SRx2.5"].metadata[KEY]["volume_metadata"]["super_resolution"]
    assert rerun["method"] == "tricubic" and "adaptation" not in rerun and "data_consistency" not in rerun
    assert widget._progress.max == STEPS_PER_TARGET

    widget._method.value = "cycleinr"
    assert not hidden(widget._adapt) and not hidden(widget._adapt_minutes) and not hidden(widget._profile)
    assert_no_traceback_notifications(notes)


def test_widget_explains_adaptation_with_an_interpolation(
    viewer_and_widget, qtbot, notes, small_ct, monkeypatch
):
    """A job that asks adaptation of tricubic (as a script driving the widget could make) fails clearly."""
    viewer, widget = viewer_and_widget
    widget._input.value = add_volume(viewer, small_ct, "ct")
    widget._method.value = "tricubic"
    make_job_from_the_controls = SuperResolutionWidget._make_job
    before = [layer.name for layer in viewer.layers]
    monkeypatch.setattr(
        SuperResolutionWidget,
        "_make_job",
        lambda self: replace(make_job_from_the_controls(self), adapt_steps=2),
    )
    run(widget, qtbot)
    assert [layer.name for layer in viewer.layers] == before
    assert any(m.startswith("adaptation needs the cycleinr method") for m in messages(notes, "error"))
    assert widget._status.value.startswith("adaptation needs the cycleinr method")
    assert_no_traceback_notifications(notes)


def test_widget_refuses_an_implausible_slice_thickness(viewer_and_widget, qtbot, notes, small_ct):
    viewer, widget = viewer_and_widget
    widget._input.value = add_volume(viewer, small_ct, "ct")
    widget._method.value = "tricubic"
    widget._exact.value = True
    widget._thickness.value = 100.0  # 33 slices of 3 mm: a typing error, not a slice profile
    before = [layer.name for layer in viewer.layers]
    run(widget, qtbot)
    assert [layer.name for layer in viewer.layers] == before
    assert any(m.startswith("slice thickness must be above 0") for m in messages(notes, "error"))
    assert_no_traceback_notifications(notes)

