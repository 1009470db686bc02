"""The napari writers: NIfTI and TIFF with the layer's geometry, atomic, never over an input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_cycleinr._layers import KEY, layer_to_volume, volume_to_layer_data
from napari_cycleinr._reader import read_files
from napari_cycleinr._writer import write_layers_to_folder, write_nifti, write_tiff
from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.infer import super_resolve
from napari_cycleinr.volume import Volume

DATA = Path(__file__).parent / "data"
CT_HEAD = DATA / "ct_vtk_headsq_64x64x93_1p5mm.nii.gz"
SAMPLE = Path(__file__).parents[1] / "src" / "napari_cycleinr" / "sample_data" / "chest_ct_5mm.nii.gz"


def super_resolved_layer(path: Path, factor: float = 2.5) -> tuple[np.ndarray, dict]:
    """What the widget makes of a file: read -> layer -> Volume -> super-resolve -> layer."""
    ((data, kwargs, _),) = read_files(path)
    volume = layer_to_volume(data, kwargs)
    result = super_resolve(volume, factor=factor, method="trilinear")
    return volume_to_layer_data(result, name="sr", role="super_resolved")


@pytest.mark.parametrize("source", [SAMPLE, CT_HEAD], ids=["sample-flipped-xy", "headsq-permuted-axes"])
def test_nifti_round_trip_keeps_spacing_origin_and_orientation(tmp_path, source):
    data, meta = super_resolved_layer(source)
    expected = layer_to_volume(data, meta)
    (written,) = write_nifti(str(tmp_path / "sr.nii.gz"), data, meta)

    # Super-resolving can make another axis the coarsest (headsq: 3.2 -> 1.28 mm), so name the file axis
    # that was through-plane when reading back; the geometry is the file's, whichever axis is chosen.
    axis = "xyz"[expected.file_axes[0]]
    again = read_volume(written, axis=axis)
    np.testing.assert_array_equal(again.data, data)
    np.testing.assert_allclose(again.affine, expected.affine, rtol=0, atol=1e-5)  # float32 header
    assert again.file_axes == read_volume(source).file_axes
    assert again.data.dtype == data.dtype
    # The file itself keeps the input's orientation codes, in the input's own axis order.
    image, original = nib.load(written), nib.load(source)
    assert nib.aff2axcodes(image.affine) == nib.aff2axcodes(original.affine)
    assert int(image.header["sform_code"]) == int(original.header["sform_code"])
    # ... and reading it back through the plugin gives the same layer geometry.
    if source == SAMPLE:
        ((_, kwargs, _),) = read_files(written)
        np.testing.assert_allclose(kwargs["scale"], meta["scale"], rtol=1e-6)
        np.testing.assert_allclose(kwargs["translate"], meta["translate"], atol=1e-4)


def test_tiff_round_trip_keeps_spacing_and_origin(tmp_path):
    volume = Volume.from_spacing(
        np.random.default_rng(0).normal(size=(6, 20, 24)).astype(np.float32),
        (4.0, 0.8, 0.8),
        origin=(-50.0, 12.5, 3.0),
    )
    result = super_resolve(volume, factor=2, method="trilinear", keep_dtype=True)
    data, meta = volume_to_layer_data(result, name="sr")
    (written,) = write_tiff(str(tmp_path / "sr.tif"), data, meta)
    ((again, kwargs, _),) = read_files(written)
    np.testing.assert_array_equal(again, data)
    np.testing.assert_allclose(kwargs["scale"], meta["scale"], rtol=1e-6)
    np.testing.assert_allclose(kwargs["translate"], meta["translate"], atol=1e-4)


def test_writers_never_overwrite_an_input(tmp_path):
    source = tmp_path / "input.nii.gz"
    source.write_bytes(SAMPLE.read_bytes())
    data, meta = super_resolved_layer(source)
    before = source.read_bytes()
    with pytest.raises(CycleINRError, match="input"):
        write_nifti(str(source), data, meta)
    # An error layer also protects its reference.
    reference = tmp_path / "reference.nii.gz"
    reference.write_bytes(b"keep me")
    error = layer_to_volume(data, meta).replace(data=np.zeros(data.shape, np.float32))
    error_data, error_meta = volume_to_layer_data(error, name="error", role="error", protect=[reference])
    with pytest.raises(CycleINRError, match="input"):
        write_nifti(str(reference), error_data, error_meta)
    assert source.read_bytes() == before and reference.read_bytes() == b"keep me"
    (written,) = write_nifti(str(tmp_path / "error.nii.gz"), error_data, error_meta)
    assert read_volume(written).data.dtype == np.float32


def test_edited_scale_and_translate_rebuild_the_affine_with_the_orientation(tmp_path):
    data, meta = super_resolved_layer(SAMPLE)
    original = layer_to_volume(data, meta)
    meta = {**meta, "scale": (2.0, 0.5, 0.5), "translate": (1.0, 2.0, 3.0)}
    (written,) = write_nifti(str(tmp_path / "edited.nii.gz"), data, meta)
    again = read_volume(written)
    np.testing.assert_allclose(again.spacing, (2.0, 0.5, 0.5), rtol=1e-6)
    np.testing.assert_allclose(np.sign(again.affine[:3, :3]), np.sign(original.affine[:3, :3]))
    ((_, kwargs, _),) = read_files(written)
    np.testing.assert_allclose(kwargs["translate"], (1.0, 2.0, 3.0), atol=1e-5)


def test_layer_made_elsewhere_is_written_axis_aligned(tmp_path):
    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    meta = {"name": "plain", "scale": (3.0, 1.0, 0.5), "translate": (9.0, 8.0, 7.0), "metadata": {}}
    (written,) = write_nifti(str(tmp_path / "plain.nii"), data, meta)
    again = read_volume(written)
    np.testing.assert_array_equal(again.data, data)
    np.testing.assert_allclose(again.spacing, (3.0, 1.0, 0.5))
    np.testing.assert_allclose(again.origin, (7.0, 8.0, 9.0))  # world (x, y, z)


def test_2d_and_rgb_layers_are_refused(tmp_path):
    with pytest.raises(CycleINRError, match="2D"):
        write_nifti(
            str(tmp_path / "a.nii.gz"), np.zeros((4, 4)), {"name": "flat", "scale": (1, 1), "metadata": {}}
        )
    with pytest.raises(CycleINRError, match="RGB"):
        write_tiff(
            str(tmp_path / "a.tif"), np.zeros((4, 4, 3)), {"name": "photo", "rgb": True, "metadata": {}}
        )
    assert list(tmp_path.iterdir()) == []


def test_several_layers_go_into_a_folder(tmp_path):
    data, meta = super_resolved_layer(SAMPLE)
    error_data, error_meta = volume_to_layer_data(
        layer_to_volume(data, meta).replace(data=np.ones(data.shape, np.float32)),
        name="sr/error",
        role="error",
    )
    written = write_layers_to_folder(
        str(tmp_path / "out"), [(data, meta, "image"), (error_data, error_meta, "image")]
    )
    assert [Path(p).name for p in written] == ["sr.nii.gz", "sr_error.nii.gz"]
    np.testing.assert_allclose(read_volume(written[1]).affine, read_volume(written[0]).affine)


def test_viewer_saves_layers_through_the_plugin(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data, meta = super_resolved_layer(SAMPLE)
    layer = viewer.add_image(data, **meta)
    assert layer.metadata[KEY]["role"] == "super_resolved"
    nifti = viewer.layers.save(str(tmp_path / "sr.nii.gz"), selected=False, plugin="napari-cycleinr")
    with pytest.warns(UserWarning, match="TIFF stores no orientation"):  # the sample's flips
        tiff = viewer.layers.save(str(tmp_path / "sr.tif"), selected=False, plugin="napari-cycleinr")
    assert [Path(p).name for p in nifti + tiff] == ["sr.nii.gz", "sr.tif"]
    expected = layer_to_volume(data, meta)
    np.testing.assert_allclose(read_volume(nifti[0]).affine, expected.affine, atol=1e-5)
    tiff_volume = read_volume(tiff[0])
    np.testing.assert_allclose(tiff_volume.spacing, expected.spacing, rtol=1e-6)
    assert not list(tmp_path.glob(".*part*"))  # no temporary left behind


def test_a_refused_save_shows_the_reason_to_the_user(tmp_path):
    """napari's Save dialog only says the save failed: the guard's reason reaches the user as a notification."""
    from napari.utils.notifications import notification_manager

    source = tmp_path / "input.nii.gz"
    source.write_bytes(SAMPLE.read_bytes())
    data, meta = super_resolved_layer(source)
    before = len(notification_manager.records)
    with pytest.raises(CycleINRError, match="input"):
        write_nifti(str(source), data, meta)
    (shown,) = notification_manager.records[before:]
    assert str(shown.message).startswith("nothing was saved: refusing to overwrite") and "input" in shown.message


def test_a_result_scored_against_a_reference_never_overwrites_it(tmp_path):
    """The pipeline records the reference in the result's metadata, so any shell's writer refuses it."""
    from napari_cycleinr import pipeline
    from napari_cycleinr.request import Request, target

    thick = read_volume(SAMPLE)
    reference = tmp_path / "reference.nii.gz"
    reference.write_bytes((SAMPLE.parent / "chest_ct_1p25mm.nii.gz").read_bytes())
    grid = target(thick.shape[0], thick.spacing[0], "spacing", 1.25)
    request = Request(method="trilinear", device="cpu").with_targets([grid])
    result = pipeline.run(request, thick, reference=read_volume(reference))
    (done,) = result.outputs
    assert done.scores is not None and done.volume.metadata["reference_path"] == str(reference)
    data, meta = volume_to_layer_data(done.volume, name="sr", role="super_resolved")
    before = reference.read_bytes()
    with pytest.raises(CycleINRError, match="input"):
        write_nifti(str(reference), data, meta)
    assert reference.read_bytes() == before
