"""The bundled sample: a real chest CT crop at 5 mm and its 1.25 mm reference, same extent, small enough."""

from __future__ import annotations

import numpy as np

from napari_cycleinr._layers import KEY
from napari_cycleinr._sample_data import THICK, THIN, chest_ct_1p25mm, chest_ct_5mm, sample_path
from napari_cycleinr.grid import z_grid
from napari_cycleinr.io import read_volume

MAX_BYTES = 6 * 1024 * 1024


def test_sample_files_are_shipped_and_small():
    sizes = [sample_path(name).stat().st_size for name in (THICK, THIN)]
    assert sum(sizes) <= MAX_BYTES, sizes


def test_thick_and_thin_cover_the_same_chest():
    thick, thin = read_volume(sample_path(THICK)), read_volume(sample_path(THIN))
    assert thick.shape == (16, 224, 224) and thin.shape == (64, 224, 224)
    np.testing.assert_allclose(thick.spacing, (5.0, 0.68164098, 0.68164098), rtol=1e-6)
    np.testing.assert_allclose(thin.spacing, (1.25, 0.68164098, 0.68164098), rtol=1e-6)
    assert thick.metadata["modality"] == thin.metadata["modality"] == "CT"
    # A target spacing of 1.25 mm puts the output exactly on the reference's grid.
    assert z_grid(16, thick.spacing[0], spacing=1.25).n_out == thin.shape[0]
    for side in (0, 1):  # same physical extent: the outer edges of the first and last slices agree
        edges = [v.affine @ np.array([side * v.shape[0] - 0.5, 0.0, 0.0, 1.0]) for v in (thick, thin)]
        np.testing.assert_allclose(edges[0], edges[1], atol=1e-4)
    # The thick volume is the slab average of the thin one (rounded to integers).
    averaged = thin.data.astype(np.float32).reshape(16, 4, 224, 224).mean(axis=1)
    assert np.abs(averaged - thick.data).max() <= 0.5 + 1e-3


def test_sample_contributions_give_ct_layers():
    ((data, kwargs, kind),) = chest_ct_5mm()
    ((ref, ref_kwargs, _),) = chest_ct_1p25mm()
    assert kind == "image" and data.shape == (16, 224, 224) and ref.shape == (64, 224, 224)
    assert kwargs["name"] == "chest_ct_5mm" and ref_kwargs["name"] == "chest_ct_1p25mm"
    assert kwargs["contrast_limits"] == (-160.0, 240.0)
    assert "LIDC-IDRI-0002" in kwargs["metadata"][KEY]["volume_metadata"]["nifti_header"]["descrip"]


def test_viewer_opens_the_samples(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cycleinr", "chest_ct_5mm")
    viewer.open_sample("napari-cycleinr", "chest_ct_1p25mm")
    thick, thin = viewer.layers["chest_ct_5mm"], viewer.layers["chest_ct_1p25mm"]
    np.testing.assert_allclose(thick.scale[0], 5.0)
    np.testing.assert_allclose(thin.scale[0], 1.25)
    np.testing.assert_allclose(thick.translate[1:], thin.translate[1:])
