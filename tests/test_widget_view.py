"""Looking at the result (issue #23 items 2, 4, 12): a TIFF round trip puts the layer back where it was,
"Show in 3D" shows the selected layer wholly in view, and coronal and sagittal views have the head on top."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cycleinr._layers import volume_to_layer_data
from napari_cycleinr._widget import SuperResolutionWidget
from napari_cycleinr.volume import Volume
from tests.test_widget import PLUGIN, open_samples, run

CORONAL = (1, 0, 2)  # y through the screen: z vertical, x across


@pytest.fixture
def shown(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(900, 700)
    widget = SuperResolutionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def grey(viewer) -> np.ndarray:
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float).mean(axis=-1)


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_a_saved_layer_opens_again_where_it_was(make_napari_viewer, tmp_path, suffix):
    viewer = make_napari_viewer()
    thick, _ = open_samples(viewer)  # stored with x and y flipped (LPS), as most DICOM-derived NIfTI
    viewer.layers.selection = {thick}
    path = tmp_path / f"saved{suffix}"
    with pytest.warns(UserWarning) if suffix == ".tif" else _nothing():
        viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
    [again] = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_allclose(again.scale, thick.scale, rtol=1e-6)
    np.testing.assert_allclose(again.translate, thick.translate, atol=1e-3)  # was (z, +99.5, +77.3) for TIFF
    np.testing.assert_array_equal(np.asarray(again.data), np.asarray(thick.data))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_show_in_3d_shows_the_selected_layer_wholly(shown, qtbot):
    viewer, widget = shown
    thick, thin = open_samples(viewer)
    widget._input.value = thick
    widget._method.value = "trilinear"
    run(widget, qtbot)
    sr = viewer.layers["chest_ct_5mm_SRx4"]
    assert viewer.layers.selection.active is sr

    viewer.layers.selection.active = thin  # the user looks at the reference's controls
    widget._show_3d.native.click()
    assert viewer.dims.ndisplay == 3 and thin.visible and not sr.visible and not thick.visible
    image = grey(viewer)
    assert image.std() > 10, "the 3D rendering is blank"
    border = np.concatenate([image[:3].ravel(), image[-3:].ravel(), image[:, :3].ravel(), image[:, -3:].ravel()])
    assert border.max() < 30, "the oblique view is clipped at the canvas edge"
    widget._show_3d.native.click()
    assert viewer.dims.ndisplay == 2 and sr.visible and thick.visible


def layer_with_bright_head(viewer, z_to_head: bool):
    """16 slices, the 4 nearest the head bright: a coronal view shows where the head is."""
    data = np.zeros((16, 40, 40), np.int16)
    head = slice(12, 16) if z_to_head else slice(0, 4)
    data[head] = 1000
    volume = Volume.from_spacing(data, (5.0, 1.0, 1.0))
    if not z_to_head:  # the same scan stored feet-first: z runs towards the feet
        flip = np.diag([1.0, 1.0, -1.0, 1.0])
        volume = volume.replace(affine=flip @ volume.affine)
    layer_data, kwargs = volume_to_layer_data(volume, name="head", contrast_limits=(0, 1000))
    return viewer.add_image(layer_data, **kwargs)


@pytest.mark.parametrize("z_to_head", [True, False], ids=["head-first", "feet-first"])
def test_coronal_and_sagittal_views_have_the_head_on_top(shown, qtbot, z_to_head):
    viewer, widget = shown
    layer = layer_with_bright_head(viewer, z_to_head)
    widget._input.value = layer
    scale, translate = tuple(layer.scale), tuple(layer.translate)
    for order in (CORONAL, (2, 0, 1)):  # coronal, sagittal
        viewer.dims.order = order
        viewer.reset_view()
        qtbot.wait(100)
        image = grey(viewer)
        rows = image.mean(axis=1)
        bright = np.flatnonzero(rows > rows.max() / 2)
        assert bright.mean() < image.shape[0] / 2, f"order {order}: the head is at the bottom"
    viewer.dims.order = (0, 1, 2)  # axial: napari's usual rows-downward view
    assert str(viewer.scene.camera.orientation2d[0].value) == "down"
    assert tuple(layer.scale) == scale and tuple(layer.translate) == translate  # world coordinates untouched
