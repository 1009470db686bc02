"""The dock widget end to end in a real napari viewer (run under Xvfb: `xvfb-run -a python -m pytest`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_cycleinr._layers import KEY, layer_meta, layer_to_volume, volume_to_layer_data
from napari_cycleinr._runner import CPU_FALLBACK_NOTICE
from napari_cycleinr._widget import (
    CANCEL_TEXT,
    CLICK_GUARD_S,
    MODEL_MIXED,
    MODEL_FILE,
    RUN_TEXT,
    SHOW_2D_TEXT,
    SHOW_3D_TEXT,
    SuperResolutionWidget,
)
from napari_cycleinr.volume import Volume

PLUGIN = "napari-cycleinr"
RUN_TIMEOUT_MS = 180_000


@pytest.fixture
def notes():
    """Every napari notification shown during the test."""
    from napari.utils.notifications import notification_manager

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


@pytest.fixture
def viewer_and_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = SuperResolutionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="super-resolution")
    yield viewer, widget
    if widget.running:  # a failed test must not leave a worker behind
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.running, timeout=30_000)


def messages(notes, severity: str) -> list[str]:
    return [str(n.message) for n in notes if str(n.severity).lower().endswith(severity)]


def assert_no_traceback_notifications(notes):
    from napari.utils.notifications import ErrorNotification

    assert not [n for n in notes if isinstance(n, ErrorNotification)], "an exception reached the user"


def use_checkpoint(widget, path):
    widget._model.value = MODEL_FILE
    widget._checkpoint.value = path


def run(widget, qtbot, timeout=RUN_TIMEOUT_MS):
    widget._run.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def crop(volume: Volume, size: int = 48, slices: int | None = None) -> Volume:
    """An in-plane centre crop that keeps the world position of every voxel."""
    r0 = (volume.shape[1] - size) // 2
    c0 = (volume.shape[2] - size) // 2
    shift = np.eye(4)
    shift[1:3, 3] = (r0, c0)
    data = volume.data[: slices or volume.shape[0], r0 : r0 + size, c0 : c0 + size]
    return volume.replace(data=np.ascontiguousarray(data), affine=volume.affine @ shift)


def add_volume(viewer, volume: Volume, name: str):
    data, kwargs = volume_to_layer_data(volume, name=name)
    return viewer.add_image(data, **kwargs)


def open_samples(viewer):
    viewer.open_sample(PLUGIN, "chest_ct_5mm")
    viewer.open_sample(PLUGIN, "chest_ct_1p25mm")
    return viewer.layers["chest_ct_5mm"], viewer.layers["chest_ct_1p25mm"]


def small_sample(viewer, size: int = 48):
    thick, thin = open_samples(viewer)
    small = add_volume(viewer, crop(layer_to_volume(thick.data, layer_meta(thick)), size), "thick")
    ref = add_volume(viewer, crop(layer_to_volume(thin.data, layer_meta(thin)), size), "thin")
    return small, ref


def factors_on_small_sample(viewer, widget, factors: str, checkpoint):
    """The widget set to super-resolve a 32 x 32 crop of the sample by `factors` with `checkpoint`."""
    small, _ = small_sample(viewer, size=32)
    widget._input.value = small
    widget._target_kind.value = "factor"
    widget._values.value = factors
    use_checkpoint(widget, checkpoint)
    return small


def test_end_to_end_on_the_sample_with_reference_and_consistency(
    viewer_and_widget, qtbot, notes, tiny_checkpoint
):
    viewer, widget = viewer_and_widget
    thick, thin = open_samples(viewer)
    widget._input.value = thick
    widget._reference.value = thin
    widget._consistency.value = True
    widget._values.value = "1.25"
    use_checkpoint(widget, tiny_checkpoint)
    assert "16 x 5 mm -> 64 x 1.25 mm (SRx4)" in widget._grid.value

    widget._run.native.click()
    assert widget.running and widget._run.text == CANCEL_TEXT
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    assert widget._run.text == RUN_TEXT
    assert widget._progress.value == widget._progress.max

    names = [layer.name for layer in viewer.layers]
    assert names == [
        "chest_ct_5mm",
        "chest_ct_1p25mm",
        "chest_ct_5mm_error",
        "chest_ct_5mm_SRx4_consistency",
        "chest_ct_5mm_SRx4",
    ]
    error, consistency, sr = (viewer.layers[n] for n in names[2:])
    assert sr.data.shape == thin.data.shape == (64, 224, 224) and sr.data.dtype == np.int16
    np.testing.assert_allclose(sr.scale, thin.scale, rtol=1e-9)
    np.testing.assert_allclose(
        sr.translate, thin.translate, atol=1e-9
    )  # the output lands on the reference grid
    np.testing.assert_allclose(sr.translate[1:], thick.translate[1:])
    assert tuple(sr.contrast_limits) == tuple(thick.contrast_limits)
    record = sr.metadata[KEY]["volume_metadata"]["super_resolution"]
    assert record["model"] == str(tiny_checkpoint)
    assert record["napari_cycleinr_version"]
    assert record["parameters"] == {
        "target": "spacing",
        "value": 1.25,
        "method": "cycleinr",
        "model": str(tiny_checkpoint),
        "profile": "average",
        "device": "auto",
        "ensemble": False,
    }

    np.testing.assert_array_equal(error.data, sr.data.astype(np.float32) - thin.data.astype(np.float32))
    assert error.data.dtype == np.float32 and tuple(error.contrast_limits) == (-200.0, 200.0)
    assert error.colormap.name == "coolwarm"
    from napari_cycleinr.model.metrics import psnr, snli

    scores = error.metadata[KEY]["volume_metadata"]["error_image"]
    assert scores["window"] == [-1024.0, 3071.0] and scores["modality"] == "CT"
    assert scores["psnr"] == pytest.approx(psnr(thin.data, sr.data), abs=1e-9)
    assert scores["mean_abs_error"] == pytest.approx(np.abs(error.data).mean(), rel=1e-3)  # nothing is clipped
    assert scores["snli_output"] == pytest.approx(snli(sr.data)) and scores["snli_reference"] > 0
    summary = f"SRx4 against chest_ct_1p25mm: PSNR {scores['psnr']:.2f} dB, mean |error| "
    assert any(m.startswith(summary) and "SNLI" in m for m in messages(notes, "info"))  # an outcome
    np.testing.assert_allclose(error.scale, sr.scale)
    np.testing.assert_allclose(error.translate, sr.translate)

    assert consistency.data.shape == thick.data.shape and consistency.data.dtype == np.float32
    np.testing.assert_allclose(consistency.scale, thick.scale)
    np.testing.assert_allclose(consistency.translate, thick.translate)
    assert tuple(consistency.contrast_limits) == (-200.0, 200.0)

    if CPU_FALLBACK_NOTICE in messages(notes, "info"):
        assert widget._device_used.value.startswith("cpu")
    assert_no_traceback_notifications(notes)

    # A rerun replaces the layers of the same names, in place.
    widget._method.value = "trilinear"
    widget._consistency.value = False
    run(widget, qtbot)  # the replaced layers back on top, the consistency layer of the first run under them
    assert [layer.name for layer in viewer.layers] == [*names[:2], names[3], names[2], names[4]]
    assert viewer.layers["chest_ct_5mm_SRx4"] is not sr
    rerun = viewer.layers["chest_ct_5mm_SRx4"].metadata[KEY]["volume_metadata"]["super_resolution"]
    assert rerun["method"] == "trilinear"


def test_several_factors_give_one_layer_each(viewer_and_widget, qtbot, notes, tiny_checkpoint):
    viewer, widget = viewer_and_widget
    factors_on_small_sample(viewer, widget, "2, 3, 5", tiny_checkpoint)
    run(widget, qtbot)
    for factor, n in ((2, 32), (3, 48), (5, 80)):
        layer = viewer.layers[f"thick_SRx{factor}"]
        assert layer.data.shape == (n, 32, 32)
        np.testing.assert_allclose(layer.scale[0], 5.0 * 16 / n)
    assert_no_traceback_notifications(notes)


def test_cancel_mid_run_stops_quickly_and_adds_nothing(viewer_and_widget, qtbot, notes, tiny_checkpoint):
    viewer, widget = viewer_and_widget
    thick, _ = open_samples(viewer)
    widget._input.value = thick
    widget._target_kind.value = "factor"
    widget._values.value = "2, 3, 4, 5, 6, 8"  # minutes of work
    widget._consistency.value = True
    use_checkpoint(widget, tiny_checkpoint)
    before = [layer.name for layer in viewer.layers]

    widget._run.native.click()
    qtbot.waitUntil(lambda: "SRx2" in widget._status.value, timeout=RUN_TIMEOUT_MS)  # the model is running
    qtbot.wait(int(CLICK_GUARD_S * 1000))  # a click sooner would be the second half of a double click
    asked = time.perf_counter()
    widget._run.native.click()  # Cancel
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)
    stopped_after = time.perf_counter() - asked

    assert stopped_after < 3.0, (
        f"cancel took {stopped_after:.1f} s"
    )  # ~1 s; slack for a busy 2-core CI machine
    assert [layer.name for layer in viewer.layers] == before
    assert widget._run.text == RUN_TEXT and widget._run.enabled
    assert "cancelled" in widget._status.value
    assert_no_traceback_notifications(notes)


def test_bad_inputs_give_notifications_not_crashes(viewer_and_widget, qtbot, notes, tmp_path):
    viewer, widget = viewer_and_widget
    flat = viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    widget._input.value = flat
    widget._run.native.click()
    assert not widget.running
    assert any("2D" in m for m in messages(notes, "error"))

    one = add_volume(viewer, Volume.from_spacing(np.zeros((1, 16, 16), np.int16), (5, 1, 1)), "one_slice")
    widget._input.value = one
    widget._run.native.click()
    assert not widget.running
    assert any("at least 2 slices" in m for m in messages(notes, "error"))

    volume = add_volume(viewer, Volume.from_spacing(np.zeros((4, 16, 16), np.int16), (5, 1, 1)), "volume")
    widget._input.value = volume
    for text, expected in (("two", "not a number"), ("5", "not finer"), ("", "type a target")):
        widget._values.value = text
        widget._run.native.click()
        assert not widget.running
        assert any(expected in m for m in messages(notes, "error")), text

    # A file that is not a checkpoint fails inside the worker: one error notification, no layer, Run again.
    fake = tmp_path / "weights.safetensors"
    fake.write_bytes(b"not a checkpoint")
    widget._values.value = "2.5"
    use_checkpoint(widget, fake)
    n_layers = len(viewer.layers)
    run(widget, qtbot)
    assert len(viewer.layers) == n_layers
    assert any("weights.safetensors" in m for m in messages(notes, "error"))
    assert widget._run.text == RUN_TEXT
    assert_no_traceback_notifications(notes)


def test_reference_on_another_grid_is_explained(viewer_and_widget, qtbot, notes):
    viewer, widget = viewer_and_widget
    small, ref = small_sample(viewer, size=24)
    widget._input.value = small
    widget._reference.value = ref
    widget._method.value = "trilinear"
    widget._values.value = "2.5"  # 32 slices, the reference has 64
    run(widget, qtbot)
    assert "thick_SRx2" in viewer.layers and "thick_error" not in viewer.layers
    assert any("has 64 slices, the output 32" in m and "1.25 mm" in m for m in messages(notes, "warning"))


def test_bundled_default_model_runs(viewer_and_widget, qtbot, notes):
    viewer, widget = viewer_and_widget
    volume = Volume.from_spacing(
        np.random.default_rng(1).integers(-1000, 400, size=(6, 24, 24)).astype(np.int16), (5.0, 0.7, 0.7)
    )
    widget._input.value = add_volume(viewer, volume, "small")
    widget._values.value = "2.5"
    run(widget, qtbot)
    record = viewer.layers["small_SRx2"].metadata[KEY]["volume_metadata"]["super_resolution"]
    # the profile found from the scan: no DICOM record and no sure estimate; the model's cue falls between its
    # boundaries on this noise, so the slab-average weights answer, as likely as not
    assert record["model"].endswith("average.safetensors") and record["slice_profile"]["source"] == "model"
    assert record["slice_profile"]["confidence"] == 0.5
    assert record["parameters"]["model"] == "bundled default" and record["parameters"]["profile"] == "average"

    assert not widget._profile.native.isHidden()  # it picks the bundled weights
    widget._profile.value = "skip"
    run(widget, qtbot)
    record = viewer.layers["small_SRx2"].metadata[KEY]["volume_metadata"]["super_resolution"]
    assert record["model"].endswith("skip.safetensors") and record["parameters"]["profile"] == "skip"

    widget._model.value = MODEL_MIXED
    assert widget._checkpoint.native.isHidden() and widget._profile.native.isHidden()
    run(widget, qtbot)
    record = viewer.layers["small_SRx2"].metadata[KEY]["volume_metadata"]["super_resolution"]
    assert record["model"].endswith("mixed.safetensors") and record["parameters"]["model"] == "mixed"
    assert_no_traceback_notifications(notes)


def test_noise_texture_is_added_recorded_and_told(viewer_and_widget, qtbot, notes, tiny_checkpoint):
    viewer, widget = viewer_and_widget
    factors_on_small_sample(viewer, widget, "4", tiny_checkpoint)
    widget._method.value = "tricubic"
    widget._texture.value = 0.5
    assert widget._make_job().texture == 0.5
    run(widget, qtbot)
    record = viewer.layers["thick_SRx4"].metadata[KEY]["volume_metadata"]["super_resolution"]
    assert record["noise_texture"]["strength"] == 0.5 and record["noise_texture"]["added_noise"] > 0
    assert any("noise texture: added" in m for m in messages(notes, "info"))
    assert_no_traceback_notifications(notes)


def test_mirror_ensemble_is_offered_for_the_model_only_and_recorded(viewer_and_widget, qtbot, notes, tiny_checkpoint):
    from napari_cycleinr.model.checkpoint import load_model
    from napari_cycleinr.model.infer import super_resolve

    viewer, widget = viewer_and_widget
    small = factors_on_small_sample(viewer, widget, "3", tiny_checkpoint)
    widget._ensemble.value = True
    widget._method.value = "tricubic"
    assert widget._ensemble.native.isHidden() and not widget._make_job().ensemble
    widget._method.value = "cycleinr"
    assert not widget._ensemble.native.isHidden()
    run(widget, qtbot)
    layer = viewer.layers["thick_SRx3"]
    record = layer.metadata[KEY]["volume_metadata"]["super_resolution"]
    assert record["parameters"]["ensemble"] is True and record["ensemble"] == "z mirror, 2 passes"
    volume = layer_to_volume(small.data, layer_meta(small))
    expected = super_resolve(volume, factor=3, model=load_model(tiny_checkpoint), device="cpu", ensemble=True)
    np.testing.assert_array_equal(np.asarray(layer.data), expected.data)
    assert_no_traceback_notifications(notes)


def test_show_in_3d_renders_the_output(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = SuperResolutionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    thick, thin = open_samples(viewer)
    widget._input.value = thick
    widget._method.value = "trilinear"
    run(widget, qtbot)
    sr = viewer.layers["chest_ct_5mm_SRx4"]

    widget._show_3d.native.click()
    assert viewer.dims.ndisplay == 3 and widget._show_3d.text == SHOW_2D_TEXT
    assert sr.visible and sr.rendering == "attenuated_mip"
    assert not thick.visible and not thin.visible
    image = viewer.screenshot(canvas_only=True, flash=False)
    grey = image[..., :3].astype(float).mean(axis=-1)
    assert grey.std() > 10 and (grey > 40).mean() > 0.05, "the 3D rendering is blank"

    widget._show_3d.native.click()
    assert viewer.dims.ndisplay == 2 and widget._show_3d.text == SHOW_3D_TEXT
    assert thick.visible and thin.visible


def test_opening_the_dock_does_not_import_torch(tmp_path):
    script = """
import sys
import napari
viewer = napari.Viewer(show=False)
viewer.open_sample("napari-cycleinr", "chest_ct_5mm")
dock, widget = viewer.window.add_plugin_dock_widget("napari-cycleinr", "Through-plane super-resolution")
assert type(widget).__name__ == "SuperResolutionWidget", widget
assert widget._input.value is viewer.layers[0]
print("torch imported:", "torch" in sys.modules)
viewer.close()
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch imported: False" in done.stdout
