"""The dock as a radiologist meets it (issue #23 items 5, 6, 11): a calm panel, typed values read as meant,
and a running job that a double click does not cancel and that no control can drift away from."""

from __future__ import annotations

import time

import pytest
from qtpy.QtCore import Qt

from napari_cycleinr._panel import ADVANCED_TITLE
from napari_cycleinr._widget import CANCEL_TEXT, CLICK_GUARD_S, RUN_TEXT
from tests.test_widget import (  # noqa: F401 - fixtures
    RUN_TIMEOUT_MS,
    factors_on_small_sample,
    notes,
    open_samples,
    use_checkpoint,
    viewer_and_widget,
)

BASICS = ["input", "target", "value(s)", "output", "", RUN_TEXT, "progress", "status", "Show in 3D"]
"""The unlabelled line under the output: the slice profile the run takes."""


def shown_names(widget) -> list[str]:
    return [w.label if w.label else getattr(w, "text", "") for w in widget.visible_controls()]


def test_the_panel_shows_the_basics_and_folds_the_rest_under_advanced(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    open_samples(viewer)
    assert shown_names(widget) == BASICS  # 19 controls before
    collapsible = widget._collapsible
    assert collapsible.text() == ADVANCED_TITLE and not collapsible.isExpanded()
    for expert in (widget._method, widget._model, widget._profile, widget._device, widget._reference,
                   widget._consistency, widget._adapt, widget._ensemble, widget._exact, widget._rendering):
        assert collapsible.isAncestorOf(expert.native), expert.label
        assert expert not in widget.visible_controls()
    collapsible.expand(animate=False)
    shown = shown_names(widget)
    assert shown[: len(BASICS)] == BASICS
    assert {"method", "model", "slice profile", "device", "reference", "consistency layer"} <= set(shown)
    assert widget._smoothing not in widget.visible_controls()  # only with exact consistency


@pytest.mark.parametrize(
    ("typed", "values"),
    [
        ("1,25", [1.25]),
        ("1,25; 2", [1.25, 2.0]),
        ("1.25 2", [1.25, 2.0]),
        ("2, 3, 5", [2.0, 3.0, 5.0]),
        ("2,3,5", [2.0, 3.0, 5.0]),
        ("2,5 ; 1,25", [2.5, 1.25]),
    ],
)
def test_a_decimal_comma_is_one_value(viewer_and_widget, typed, values):
    viewer, widget = viewer_and_widget
    thick, _ = open_samples(viewer)
    widget._input.value = thick
    widget._target_kind.value = "factor"
    widget._values.value = typed
    job = widget._make_job()
    assert [t.value for t in job.targets] == values
    assert widget._grid.value.count("->") == len(values)
    assert "1,25 = 1.25" in widget._values.tooltip  # the rule is told where the value is typed


def test_switching_the_target_kind_keeps_the_typed_value(viewer_and_widget):
    viewer, widget = viewer_and_widget
    open_samples(viewer)
    widget._values.value = "2"
    widget._target_kind.value = "factor"
    assert widget._values.value == "2" and "(SRx2)" in widget._grid.value
    widget._target_kind.value = "spacing"
    assert widget._values.value == "2"
    widget._values.value = "1.25"  # the untouched default of one kind becomes the other's default
    widget._target_kind.value = "factor"
    assert widget._values.value == "4"


def test_double_click_runs_and_locks_the_settings_until_the_job_ends(
    viewer_and_widget, qtbot, notes, tiny_checkpoint
):
    viewer, widget = viewer_and_widget
    thick, _ = open_samples(viewer)
    widget._input.value = thick
    widget._target_kind.value = "factor"
    widget._values.value = "2, 3, 4, 5, 6"  # long enough to watch
    use_checkpoint(widget, tiny_checkpoint)
    planned = widget._grid.value

    qtbot.mouseDClick(widget._run.native, Qt.MouseButton.LeftButton)  # press, release, press, release
    widget._run.native.click()  # and a third, nervous click
    qtbot.wait(int(CLICK_GUARD_S * 500))
    assert widget.running and widget._run.text == CANCEL_TEXT, "a double click cancelled the run"
    assert widget._grid.value == f"running: {planned}"
    for control in widget.settings:
        assert not control.enabled
    viewer.add_image(thick.data[:4], name="another")  # the layer list changes: the preview stays the job's
    assert widget._grid.value == f"running: {planned}"

    time.sleep(CLICK_GUARD_S)
    widget._run.native.click()  # now a click is a Cancel
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    assert widget._run.text == RUN_TEXT and all(c.enabled for c in widget.settings)
    assert widget._grid.value == planned
