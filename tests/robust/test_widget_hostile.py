"""The plugin in a real napari viewer (under Xvfb) against hostile use: bad files opened through the plugin,
a second Run during a run, Cancel at random points, napari closed mid-run, memory running out on the GPU or
the CPU. napari must keep working: a notification (never a traceback), no layer added or replaced, no file
written, every input untouched.

The ordinary widget behaviour (runs, references, cancel timing, 3D) is tested in tests/test_widget.py, whose
helpers this module reuses.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading

import numpy as np
import pytest
import torch

import napari_cycleinr.model.checkpoint as checkpoint
import napari_cycleinr.model.infer as infer
import napari_cycleinr.runtime.devices as devices
from napari_cycleinr._runner import GPU_MEMORY_FALLBACK_NOTICE, GPU_OUT_OF_MEMORY, OUT_OF_MEMORY
from napari_cycleinr._widget import RUN_TEXT, SuperResolutionWidget
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.volume import Volume
from tests.robust.bad_files import BY_KEY, UNREADABLE, ramp
from tests.test_widget import (
    add_volume,
    assert_no_traceback_notifications,
    messages,
    notes,
    use_checkpoint,
    viewer_and_widget,
)

__all__ = ["notes"]  # the notifications fixture of tests/test_widget.py

PLUGIN = "napari-cycleinr"
WORKER_THREAD = "cycleinr-super-resolution"
TIMEOUT_MS = 120_000

pytestmark = pytest.mark.usefixtures("untouched")


def small_ct(viewer, name="ct", shape=(8, 48, 48)):
    """A small CT-like volume with 5 mm slices, as a layer of our own (geometry in its metadata)."""
    volume = Volume.from_spacing(np.ascontiguousarray(ramp(shape)), (5.0, 0.7, 0.7))
    return add_volume(viewer, volume, name)


def layer_ids(viewer) -> list[tuple[str, int]]:
    """Names and identities: a replaced layer counts as a change."""
    return [(layer.name, id(layer)) for layer in viewer.layers]


def wait_done(widget, qtbot, timeout=TIMEOUT_MS):
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)
    assert widget._run.text == RUN_TEXT and widget._run.enabled


def no_worker_thread() -> bool:
    return not any(t.name == WORKER_THREAD for t in threading.enumerate())


# --- files -----------------------------------------------------------------------------------------------


def test_bad_files_opened_through_the_plugin_change_nothing(viewer_and_widget, bad_paths, notes):
    from napari.utils.notifications import Notification

    viewer, _ = viewer_and_widget
    small_ct(viewer)
    before = layer_ids(viewer)
    for case in UNREADABLE:
        path = bad_paths[case.key]
        with pytest.raises(CycleINRError, match=case.read) as caught:
            viewer.open(str(path), plugin=PLUGIN)
        # What napari shows for an exception that reaches its event loop: our one line, nothing else.
        assert str(Notification.from_exception(caught.value).message) == str(caught.value)
        assert layer_ids(viewer) == before, case.key
    # The GUI path (File > Open, drag and drop) raises the same error into napari's notification hook.
    with pytest.raises(CycleINRError, match=BY_KEY["truncated_nii_gz"].read):
        viewer.window._qt_viewer._qt_open([str(bad_paths["truncated_nii_gz"])], stack=False, plugin=PLUGIN)
    # napari still works: a good file opens.
    (layer,) = viewer.open(str(bad_paths["two_slices"]), plugin=PLUGIN)
    assert layer.data.shape == (2, 10, 12) and layer_ids(viewer)[:-1] == before
    assert_no_traceback_notifications(notes)


def test_tiff_without_spacing_is_announced_in_napari(viewer_and_widget, bad_paths):
    from napari.utils.notifications import notification_manager

    viewer, _ = viewer_and_widget
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        with notification_manager:  # the hooks napari installs when it runs: warnings become notifications
            (layer,) = viewer.open(str(bad_paths["tiff_without_spacing"]), plugin=PLUGIN)
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    assert tuple(layer.scale) == (1.0, 1.0, 1.0)
    warned = [str(n.message) for n in seen if str(n.severity).lower().endswith("warning")]
    assert any("plain.tif" in m and "assuming 1 mm" in m for m in warned), [str(n.message) for n in seen]


@pytest.mark.parametrize("key", ["nan_voxels", "inf_voxels", "one_slice"])
def test_readable_file_that_cannot_be_super_resolved(viewer_and_widget, qtbot, bad_paths, notes, key):
    viewer, widget = viewer_and_widget
    (layer,) = viewer.open(str(bad_paths[key]), plugin=PLUGIN)
    widget._input.value = layer
    widget._target_kind.value = "factor"
    widget._values.value = "2"
    before = layer_ids(viewer)
    widget._run.native.click()
    wait_done(widget, qtbot)
    assert any(re.search(BY_KEY[key].run, m) for m in messages(notes, "error")), messages(notes, "error")
    assert layer_ids(viewer) == before
    assert_no_traceback_notifications(notes)


@pytest.mark.parametrize("key", ["two_slices", "float64", "bool_tiff", "non_ascii_path"])
def test_odd_but_valid_file_runs(viewer_and_widget, qtbot, bad_paths, notes, tiny_checkpoint, key):
    viewer, widget = viewer_and_widget
    with pytest.warns(UserWarning, match="assuming 1 mm") if BY_KEY[key].warns else contextlib.nullcontext():
        (layer,) = viewer.open(str(bad_paths[key]), plugin=PLUGIN)
    widget._input.value = layer
    widget._target_kind.value = "factor"
    widget._values.value = "2"
    use_checkpoint(widget, tiny_checkpoint)
    widget._run.native.click()
    wait_done(widget, qtbot)
    output = viewer.layers[f"{layer.name}_SRx2"]
    assert output.data.shape == (2 * layer.data.shape[0], *layer.data.shape[1:])
    assert output.data.dtype == layer.data.dtype
    assert_no_traceback_notifications(notes)


# --- runs --------------------------------------------------------------------------------------------------


def long_job(viewer, widget, tiny_checkpoint):
    """Settings that keep the model busy for many seconds (cancelled long before the end)."""
    widget._input.value = small_ct(viewer, "big", shape=(24, 224, 224))
    widget._target_kind.value = "factor"
    widget._values.value = "2, 3, 4, 5, 6, 8"
    use_checkpoint(widget, tiny_checkpoint)


def test_a_second_run_while_one_is_running_is_refused(viewer_and_widget, qtbot, notes, tiny_checkpoint):
    viewer, widget = viewer_and_widget
    long_job(viewer, widget, tiny_checkpoint)
    before = layer_ids(viewer)
    widget._run.native.click()
    qtbot.waitUntil(lambda: "SRx2" in widget._status.value, timeout=TIMEOUT_MS)
    worker, cancel = widget._worker, widget._cancel
    widget.start()  # a second Run, e.g. from a shortcut or a script
    assert widget._worker is worker and widget._cancel is cancel, "the first job lost its cancel switch"
    assert any("already running" in m for m in messages(notes, "info"))
    assert sum(t.name == WORKER_THREAD for t in threading.enumerate()) == 1
    widget.cancel()  # what the Cancel button does (a click this soon would count as a double click)
    wait_done(widget, qtbot, timeout=30_000)
    assert layer_ids(viewer) == before
    qtbot.waitUntil(no_worker_thread, timeout=10_000)
    assert_no_traceback_notifications(notes)


def count_updates(viewer, widget, qtbot, tiny_checkpoint) -> int:
    """Run the cancel test's job once to the end; returns how many progress updates the GUI received."""
    received = []
    original = widget._on_update
    widget._on_update = lambda update: (received.append(update), original(update))
    widget._run.native.click()
    wait_done(widget, qtbot)
    widget._on_update = original
    return len(received)


def test_cancel_at_random_points_adds_nothing(viewer_and_widget, qtbot, notes, tiny_checkpoint, tmp_path):
    viewer, widget = viewer_and_widget
    widget._input.value = small_ct(viewer, shape=(8, 40, 40))
    widget._target_kind.value = "factor"
    widget._values.value = "2, 3"
    widget._consistency.value = True
    use_checkpoint(widget, tiny_checkpoint)
    total = count_updates(viewer, widget, qtbot, tiny_checkpoint)
    assert total >= 6 and "ct_SRx2" in viewer.layers  # a complete run, whose layers must now survive intact
    before = layer_ids(viewer)

    rng = random.Random(1234)
    points = sorted({0, 1, total, *rng.sample(range(2, total), 3)})
    for point in points:
        seen = [0]
        original = widget._on_update

        def on_update(update, point=point, original=original, seen=seen):
            original(update)
            seen[0] += 1
            if seen[0] == point:
                widget.cancel()  # the user presses Cancel (a click within 0.5 s is a double click's)

        widget._on_update = on_update
        widget._run.native.click()
        if point == 0:
            widget.cancel()  # Cancel before the worker reported anything
        wait_done(widget, qtbot)
        widget._on_update = original
        assert layer_ids(viewer) == before, f"cancel at update {point} of {total} changed the layers"
        assert widget._status.value.startswith("cancelled"), (point, widget._status.value)
    assert len([m for m in messages(notes, "info") if "cancelled: nothing was added" in m]) == len(points)
    qtbot.waitUntil(no_worker_thread, timeout=10_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.safetensors"]  # nothing written
    assert_no_traceback_notifications(notes)


def test_closing_napari_during_a_run(make_napari_viewer, qtbot, tiny_checkpoint, tmp_path):
    """The job is cancelled, its thread ends, and its last signals touch no deleted Qt widget (pytest-qt
    fails the test on any exception raised in the Qt event loop)."""
    viewer = make_napari_viewer()
    widget = SuperResolutionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    long_job(viewer, widget, tiny_checkpoint)
    widget._run.native.click()
    qtbot.waitUntil(lambda: "SRx2" in widget._status.value, timeout=TIMEOUT_MS)
    assert not no_worker_thread()
    viewer.close()
    qtbot.waitUntil(no_worker_thread, timeout=10_000)  # cancelled, not left running to the end
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert widget._cancel.is_set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.safetensors"]


# --- memory ------------------------------------------------------------------------------------------------

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total capacity; 77.2 GiB in use)"
CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 154618822656 bytes"
)


@pytest.fixture
def pretend_gpu(monkeypatch):
    """A machine whose GPU runs out of memory: 'auto' and 'cuda' resolve to cuda, the model stays on the CPU
    (this torch may have no CUDA), and super-resolving on cuda raises CUDA's OutOfMemoryError after the
    first block. On the CPU, the real inference runs."""
    real_resolve, real_super_resolve, real_load = (
        infer.resolve_device,
        infer.super_resolve,
        checkpoint.load_model,
    )
    calls = []
    monkeypatch.setattr("napari_cycleinr._widget.no_cuda_reason", lambda: None)  # the dock's own probe too

    def resolve_device(name):
        if isinstance(name, torch.device) or name == "cpu":
            return real_resolve(name)
        return torch.device("cuda")

    def super_resolve(volume, *, device="auto", progress=None, **kwargs):
        calls.append(torch.device(device).type)
        if torch.device(device).type == "cuda":
            if progress is not None:
                progress(1, 8)
            raise torch.cuda.OutOfMemoryError(CUDA_OOM)
        return real_super_resolve(volume, device=device, progress=progress, **kwargs)

    monkeypatch.setattr(devices, "resolve_device", resolve_device)
    monkeypatch.setattr(infer, "super_resolve", super_resolve)
    monkeypatch.setattr(checkpoint, "load_model", lambda path=None, device="cpu", profile=None: real_load(path, "cpu", profile))
    return calls


def test_gpu_out_of_memory_on_auto_goes_on_on_the_cpu(
    viewer_and_widget, qtbot, notes, tiny_checkpoint, pretend_gpu
):
    viewer, widget = viewer_and_widget
    widget._input.value = small_ct(viewer)
    widget._target_kind.value = "factor"
    widget._values.value = "2, 3"
    use_checkpoint(widget, tiny_checkpoint)
    widget._run.native.click()
    wait_done(widget, qtbot)
    assert pretend_gpu == ["cuda", "cpu", "cpu"]  # once on the GPU, then the CPU for the rest of the run
    assert GPU_MEMORY_FALLBACK_NOTICE in messages(notes, "warning")
    assert "ct_SRx2" in viewer.layers and "ct_SRx3" in viewer.layers
    assert widget._device_used.value == "cpu (the GPU ran out of memory)"
    record = viewer.layers["ct_SRx2"].metadata["cycleinr"]["volume_metadata"]["super_resolution"]
    assert record["device"] == "cpu"
    assert_no_traceback_notifications(notes)


def test_gpu_out_of_memory_on_an_explicit_cuda_is_explained(
    viewer_and_widget, qtbot, notes, tiny_checkpoint, pretend_gpu
):
    viewer, widget = viewer_and_widget
    widget._input.value = small_ct(viewer)
    widget._device.value = "cuda"
    use_checkpoint(widget, tiny_checkpoint)
    before = layer_ids(viewer)
    widget._run.native.click()
    wait_done(widget, qtbot)
    assert pretend_gpu == ["cuda"]
    assert GPU_OUT_OF_MEMORY in messages(notes, "error")
    assert widget._status.value == GPU_OUT_OF_MEMORY
    assert layer_ids(viewer) == before
    assert_no_traceback_notifications(notes)


def test_cpu_out_of_memory_mid_run_is_explained(
    viewer_and_widget, qtbot, notes, tiny_checkpoint, monkeypatch
):
    """The real inference runs and the allocator fails after its first block (torch's CPU message)."""
    real = infer.super_resolve

    def super_resolve(volume, *, progress=None, **kwargs):
        def progress_then_fail(done, total):
            if progress is not None:
                progress(done, total)
            raise RuntimeError(CPU_OOM)

        return real(volume, progress=progress_then_fail, **kwargs)

    monkeypatch.setattr(infer, "super_resolve", super_resolve)
    viewer, widget = viewer_and_widget
    widget._input.value = small_ct(viewer)
    widget._device.value = "cpu"
    use_checkpoint(widget, tiny_checkpoint)
    before = layer_ids(viewer)
    widget._run.native.click()
    wait_done(widget, qtbot)
    assert OUT_OF_MEMORY in messages(notes, "error")
    assert layer_ids(viewer) == before
    assert_no_traceback_notifications(notes)
