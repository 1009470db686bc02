"""The model shipped in the package: it loads, it is versioned, and it beats interpolation on real CT."""

import json

import pytest

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import (
    BUNDLED_MODELS,
    FORMAT_VERSION,
    default_model_path,
    load_model,
    read_header,
)
from napari_cycleinr.model.evaluate import evaluate_volume
from tests.conftest import DATA

LIDC_CROP = DATA / "ct_lidc0002_crop_128x128x40_1p25mm.nii.gz"  # held-back validation scan, never trained on


def test_shipped_model_is_small_versioned_and_documented():
    path = default_model_path()
    assert path.is_file() and path.stat().st_size < 25e6
    header = read_header(path)
    assert header["format_version"] == FORMAT_VERSION
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["format_version"] == str(FORMAT_VERSION)
    assert header["info"]["train_config"]["cycle_weight"] > 0
    assert header["info"]["train_config"]["noise_weight"] > 0  # stage 2: the noise-level consistency loss
    assert header["config"].attention


@pytest.mark.parametrize("degradation", ["average", "skip"])
def test_shipped_model_beats_tricubic_at_x4(degradation):
    volume = read_volume(LIDC_CROP)
    result = evaluate_volume(volume, 4.0, degradation, {"cycleinr": load_model()}, ["tricubic", "cycleinr"])
    tricubic, cycleinr = result["methods"]["tricubic"], result["methods"]["cycleinr"]
    assert cycleinr["psnr"] > tricubic["psnr"], result["methods"]
    assert cycleinr["ssim"] > tricubic["ssim"], result["methods"]


@pytest.mark.parametrize(
    ("scan", "factor", "modality"),
    [
        ("ct_totalseg_sm_122x101x30_3mm.nii.gz", 2.0, "CT"),  # where a stronger noise loss failed
        ("ct_totalseg_sm_122x101x30_3mm.nii.gz", 4.0, "CT"),
        ("ct_vtk_headsq_64x64x93_1p5mm.nii.gz", 4.0, "CT"),
        ("mr_totalseg_sm_117x91x20_3mm.nii.gz", 4.0, "MR"),
    ],
)
def test_shipped_model_beats_tricubic_on_scans_unlike_the_validation_scan(scan, factor, modality):
    """Guards against a model tuned to the validation scan (docs/model.md, "Tried and not taken")."""
    volume = read_volume(DATA / scan)
    models = {"cycleinr": load_model()}
    result = evaluate_volume(volume, factor, "average", models, ["tricubic", "cycleinr"], modality)
    assert result["methods"]["cycleinr"]["psnr"] > result["methods"]["tricubic"]["psnr"], result["methods"]


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_every_bundled_model_loads_by_name_and_is_documented(name):
    path = default_model_path(name)
    assert path.is_file() and path.stat().st_size < 25e6 and path.with_suffix(".json").is_file()
    model = load_model(name)
    assert model.source == str(path) and read_header(path)["format_version"] == FORMAT_VERSION
    assert load_model(None).source == str(default_model_path())


def test_the_slab_average_model_beats_the_default_on_slab_averages_and_tricubic_on_gaps():
    """What it is for (contiguous slabs), and what it must still do where it is weaker (slices with gaps)."""
    volume = read_volume(LIDC_CROP)
    models = {"default": load_model(), "average": load_model("average")}
    slabs = evaluate_volume(volume, 4.0, "average", models, ["tricubic", "default", "average"])["methods"]
    assert slabs["average"]["psnr"] > slabs["default"]["psnr"] > slabs["tricubic"]["psnr"], slabs
    gaps = evaluate_volume(volume, 4.0, "skip", models, ["tricubic", "average"])["methods"]
    assert gaps["average"]["psnr"] > gaps["tricubic"]["psnr"], gaps
