"""Saving a result from the dock's run never overwrites what it came from (issue #23 item 1, the output
guard of io/guard.py seen from the widget): not the input, not the reference, not the bundled sample."""

from __future__ import annotations

import shutil
import warnings

from napari_cycleinr._layers import layer_meta, protected_paths
from napari_cycleinr._sample_data import THIN, sample_path
from napari_cycleinr.errors import CycleINRError
from tests.test_widget import PLUGIN, notes, open_samples, run, viewer_and_widget  # noqa: F401


def refused(viewer, path) -> bool:
    """Whether napari's save of the selected layer to path wrote nothing (the writer refused: napari then
    warns that the plugin wrote nothing, and its Save dialog says the save failed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return viewer.layers.save(str(path), selected=True, plugin=PLUGIN) == []
        except (CycleINRError, OSError) as error:
            return "refusing" in str(error)


def test_the_result_cannot_be_saved_over_its_reference_or_the_bundled_sample(
    viewer_and_widget, qtbot, tmp_path
):
    viewer, widget = viewer_and_widget
    thick, bundled_thin = open_samples(viewer)
    copy = shutil.copy(sample_path(THIN), tmp_path / "reference.nii.gz")
    [reference] = viewer.open(str(copy), plugin=PLUGIN)
    widget._input.value = thick
    widget._reference.value = reference
    widget._method.value = "trilinear"
    run(widget, qtbot)
    sr = viewer.layers["chest_ct_5mm_SRx4"]
    assert "chest_ct_5mm_error" in viewer.layers  # the reference was used
    assert str(copy) in protected_paths(layer_meta(sr))  # the result knows what it must not replace
    viewer.layers.selection = {sr}

    before = copy.read_bytes()
    assert refused(viewer, copy)
    assert copy.read_bytes() == before

    packaged = sample_path(THIN)
    kept = packaged.read_bytes()
    try:
        assert refused(viewer, packaged)
        assert packaged.read_bytes() == kept
    finally:
        if packaged.read_bytes() != kept:  # never leave the package damaged, even if the guard failed
            packaged.write_bytes(kept)
