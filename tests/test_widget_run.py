"""A run as a radiologist lives it (issue #23 items 3, 7, 8, 9, 10): the result in view, notices that say
what kind of news they are, a bar that moves, a dock that cancels when closed, and a rerun that keeps the
user's display."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer

from napari_cycleinr._progress import LOADING
from napari_cycleinr._runner import CPU_FALLBACK_NOTICE
from napari_cycleinr._widget import RUN_TEXT, SuperResolutionWidget
from tests.test_widget import (  # noqa: F401 - fixtures
    RUN_TIMEOUT_MS,
    assert_no_traceback_notifications,
    messages,
    notes,
    open_samples,
    run,
    small_sample,
    use_checkpoint,
    viewer_and_widget,
)

FREEZE_BOUND_S = 1.0
"""What the test asserts on a shared 2-core CI machine; the figure itself is printed (issue: < 0.2 s)."""
ADDING_BOUND_S = 2.0
"""napari's own cost of adding one layer (its canvas visual and controls) on that machine, with margin;
all three layers at once froze it for 3.4 s there."""


def sample_with_reference(viewer, widget, checkpoint, size=48):
    small, ref = small_sample(viewer, size=size)
    widget._input.value = small
    widget._reference.value = ref
    widget._consistency.value = True
    use_checkpoint(widget, checkpoint)
    return small, ref


def test_the_result_lands_on_top_selected_with_the_differences_hidden_below(
    viewer_and_widget, qtbot, notes, tiny_checkpoint
):
    viewer, widget = viewer_and_widget
    sample_with_reference(viewer, widget, tiny_checkpoint)
    run(widget, qtbot)
    names = [layer.name for layer in viewer.layers]
    assert names[-3:] == ["thick_error", "thick_SRx4_consistency", "thick_SRx4"]
    sr = viewer.layers["thick_SRx4"]
    assert viewer.layers.selection.active is sr and sr.visible
    assert not viewer.layers["thick_error"].visible and not viewer.layers["thick_SRx4_consistency"].visible
    image = viewer.screenshot(canvas_only=True, flash=False)
    red, blue = image[..., 0].astype(float), image[..., 2].astype(float)
    assert np.abs(red - blue).mean() < 2, "a coolwarm difference layer covers the result"


def test_a_rerun_keeps_the_users_contrast_and_colormap(viewer_and_widget, qtbot, notes, tiny_checkpoint):
    viewer, widget = viewer_and_widget
    sample_with_reference(viewer, widget, tiny_checkpoint, size=32)
    run(widget, qtbot)
    sr, error = viewer.layers["thick_SRx4"], viewer.layers["thick_error"]
    sr.contrast_limits, sr.colormap, sr.gamma = (-600.0, 900.0), "viridis", 0.8
    error.contrast_limits = (-50.0, 50.0)
    run(widget, qtbot)
    again, error_again = viewer.layers["thick_SRx4"], viewer.layers["thick_error"]
    assert again is not sr
    assert tuple(again.contrast_limits) == (-600.0, 900.0) and again.colormap.name == "viridis"
    assert again.gamma == 0.8
    assert tuple(error_again.contrast_limits) == (-50.0, 50.0) and error_again.colormap.name == "coolwarm"
    assert_no_traceback_notifications(notes)


def test_outcomes_are_information_problems_warnings_and_the_cpu_note_comes_first(
    viewer_and_widget, qtbot, notes, tiny_checkpoint
):
    viewer, widget = viewer_and_widget
    sample_with_reference(viewer, widget, tiny_checkpoint, size=32)
    widget._device.value = "auto"
    widget._run.native.click()
    assert widget.running
    # on this CPU-only machine the note is there as the run starts, not after it
    assert CPU_FALLBACK_NOTICE in messages(notes, "info")
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    infos, warnings = messages(notes, "info"), messages(notes, "warning")
    assert any(m.startswith("SRx4 against thin: PSNR") for m in infos)  # the quality summary: an outcome
    assert not warnings and messages(notes, "info").count(CPU_FALLBACK_NOTICE) == 1

    widget._values.value = "2.5"  # 32 slices; the reference has 64: a real problem
    run(widget, qtbot)
    assert any("has 64 slices, the output 32" in m for m in messages(notes, "warning"))


def test_cuda_without_a_gpu_fails_at_once(viewer_and_widget, qtbot, notes):
    viewer, widget = viewer_and_widget
    thick, _ = open_samples(viewer)
    widget._input.value = thick
    widget._device.value = "cuda"
    asked = time.perf_counter()
    widget._run.native.click()
    answered = time.perf_counter() - asked
    assert not widget.running and answered < 0.5
    assert any("device cuda" in m and "no CUDA GPU" in m for m in messages(notes, "error"))
    assert widget._progress.value == 0


def test_progress_moves_smoothly_with_a_loading_phase_and_time_left_and_the_gui_never_freezes(
    viewer_and_widget, qtbot, notes, tiny_checkpoint
):
    viewer, widget = viewer_and_widget
    thick, _ = open_samples(viewer)
    widget._input.value = thick
    widget._target_kind.value = "factor"
    widget._values.value = "2, 3, 4"
    use_checkpoint(widget, tiny_checkpoint)
    seen: list[tuple[float, int, int, str]] = []
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    def sample() -> None:
        seen.append((time.perf_counter(), widget._progress.value, widget._progress.max, widget._status.value))
        if widget._worker is None and not finished:
            finished.append(time.perf_counter())  # the job is done; its layers are being added

    finished: list[float] = []

    sampler = QTimer()
    sampler.setInterval(20)
    sampler.timeout.connect(sample)
    timer.start()
    sampler.start()
    widget._run.native.click()
    assert widget._progress.max == 0 and widget._status.value == LOADING  # busy bar while torch/model load
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    timer.stop()
    sampler.stop()

    ticks_ = np.asarray(ticks)
    gaps = np.diff(ticks_)
    during = gaps[ticks_[1:] <= finished[0]]  # while the model ran, then while the three layers were added
    adding = gaps[ticks_[1:] > finished[0]]
    print(f"\nlongest Qt event-loop gap: {during.max():.3f} s while the job ran, {adding.max():.3f} s while "
          f"its {len(viewer.layers) - 2} layers were added ({len(ticks)} ticks of 10 ms)")
    assert during.max() < FREEZE_BOUND_S, f"napari froze for {during.max():.2f} s during the run"
    assert adding.max() < ADDING_BOUND_S, f"napari froze for {adding.max():.2f} s adding the layers"
    determinate = [(v, m) for _, v, m, _ in seen if m > 0]
    values = sorted({v for v, m in determinate if v < m})
    assert len(values) >= 8, f"the bar jumped: {values}"  # 3 targets x a few blocks each, and between them
    steps = np.diff([0, *values]) / determinate[0][1]
    assert steps.max() < 0.2, f"a jump of {steps.max():.0%}"
    assert any("left" in status for *_, status in seen), "no estimate of the time left"
    assert widget._progress.value == widget._progress.max > 0

    widget._checkpoint.value = Path(tiny_checkpoint).with_name("missing.safetensors")
    Path(widget._checkpoint.value).write_bytes(b"not a checkpoint")
    run(widget, qtbot)  # an error after a full bar: the bar is reset, not left at 100 %
    assert widget._progress.value == 0 and widget._run.text == RUN_TEXT
    assert_no_traceback_notifications(notes)


def test_closing_the_dock_cancels_and_adds_nothing(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    for close in ("title bar X", "remove_dock_widget"):
        widget = SuperResolutionWidget(viewer)
        dock = viewer.window.add_dock_widget(widget, name=f"super-resolution {close}")
        thick, _ = open_samples(viewer) if not len(viewer.layers) else (viewer.layers[0], None)
        widget._input.value = thick
        widget._target_kind.value = "factor"
        widget._values.value = "2, 3, 4, 5, 6, 8"  # minutes of work
        use_checkpoint(widget, tiny_checkpoint)
        before = [layer.name for layer in viewer.layers]
        widget._run.native.click()
        worker = widget._worker
        qtbot.waitUntil(lambda: "SRx2" in widget._status.value, timeout=RUN_TIMEOUT_MS)
        if close == "title bar X":
            dock.title.close_button.click()
        else:
            viewer.window.remove_dock_widget(widget.native)
        assert widget._cancel.is_set()
        qtbot.waitUntil(lambda: worker.is_running is False, timeout=30_000)
        qtbot.wait(300)
        assert [layer.name for layer in viewer.layers] == before, close


EXIT_SCRIPT = """
import time, napari
from qtpy.QtWidgets import QApplication
from napari_cycleinr._widget import SuperResolutionWidget
viewer = napari.Viewer(show=False)
viewer.open_sample("napari-cycleinr", "chest_ct_5mm")
widget = SuperResolutionWidget(viewer)
viewer.window.add_dock_widget(widget, name="sr")
widget._target_kind.value = "factor"
widget._values.value = "2, 3, 4, 5, 6, 8"
widget._method.value = "trilinear"
widget.start()
app = QApplication.instance()
end = time.monotonic() + 60
while "SRx" not in widget._status.value and time.monotonic() < end:
    app.processEvents(); time.sleep(0.01)
viewer.window.remove_dock_widget(widget.native)
del widget
viewer.close()
print("closed")
"""


def test_removing_the_dock_during_a_run_leaves_nothing_on_stderr_at_exit():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0 and "closed" in done.stdout, done.stderr[-3000:]
    assert "has been deleted" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
