"""The pipeline settles the slice profile before any work: the user's, the DICOM record's, or the image's
estimate: acted on when confident (a Gaussian profile), else reported while the mixed-profile weights answer
(pipeline.settle_profile)."""

import json

import numpy as np
import pytest

from napari_cycleinr import pipeline
from napari_cycleinr.cli import main
from napari_cycleinr.io import read_volume
from napari_cycleinr.request import Request, target
from napari_cycleinr.slice_profile import profile_weights
from napari_cycleinr.volume import Volume
from tests.conftest import CT_3MM, DATA, MR_3MM

PHILIPS = DATA / "dicom" / "ct_philips_2slices"
MR_SERIES = DATA / "dicom" / "mr_sag_3slices"


def test_the_user_choice_wins():
    volume = read_volume(CT_3MM)
    request, found = pipeline.settle_profile(Request(profile="skip", profile_source="user"), volume)
    assert (request.profile, request.weights, found.source) == ("skip", None, "user")


def test_a_dicom_record_picks_the_specialist():
    volume = read_volume(PHILIPS)  # SliceThickness 1 mm, 1 mm between slice centres: contiguous slabs
    assert volume.metadata["slice_thickness_mm"] == pytest.approx(1.0)
    request, found = pipeline.settle_profile(Request(profile=None), volume)
    assert (found.kind, found.source, request.profile, request.profile_source) == ("average", "header", "average", "header")
    assert request.weights is None  # the bundled weights for the profile


@pytest.mark.parametrize(("thickness", "kind"), [(0.3, "skip"), (2.0, "gaussian")])
def test_gaps_and_overlaps_from_the_record(thickness, kind):
    volume = read_volume(PHILIPS)
    volume.metadata["slice_thickness_mm"] = thickness
    request, found = pipeline.settle_profile(Request(profile=None, consistency=True), volume)
    assert request.profile == kind and found.describe().endswith("from DICOM")


def test_without_a_record_the_estimate_is_told_and_the_mixed_weights_answer():
    volume = read_volume(CT_3MM)
    request, found = pipeline.settle_profile(Request(profile=None, consistency=True), volume)
    assert found.source == "estimate" and not found.confident
    assert request.weights == "mixed" and request.profile == "average"  # consistency keeps the default
    assert "not known (the image suggests" in found.describe()


def test_a_gaussian_profile_found_in_the_image_picks_the_gaussian_weights():
    thin = read_volume(DATA / "ct_lidc0002_crop_128x128x40_1p25mm.nii.gz")
    matrix = profile_weights(thin.shape[0], 2.5, "gaussian").astype(np.float32)
    data = np.rint(np.tensordot(matrix, thin.data.astype(np.float32), axes=(1, 0))).astype(np.int16)
    volume = Volume.from_spacing(data, (thin.spacing[0] * 2.5, *thin.spacing[1:]))  # a NIfTI: no record
    result = pipeline.run(Request(profile=None).with_targets([target(len(data), volume.spacing[0], "factor", 2.0)]), volume)
    record = result.outputs[0].volume.metadata["super_resolution"]
    assert record["model"].endswith("gaussian.safetensors")
    assert record["slice_profile"]["source"] == "estimate" and record["slice_profile"]["kind"] == "gaussian"
    assert result.slice_profile.describe().startswith("slice profile: Gaussian, estimated from the image")


@pytest.mark.parametrize(
    ("settings", "weights"),
    [
        ({"profile": None}, "mr"),  # no record: the MR weights where a CT would get mixed
        ({"profile": "skip", "profile_source": "user"}, "skip_mr"),  # a known profile: its MR-aware weights
        ({"profile": "skip", "profile_source": "user", "weights": "skip"}, "skip"),  # named weights are kept
        ({"profile": None, "weights": "mixed"}, "mixed"),  # weights the user names are kept
        ({"profile": None, "method": "tricubic"}, None),
    ],
)
def test_an_mr_of_unknown_profile_gets_the_weights_trained_with_mr(settings, weights):
    volume = read_volume(MR_3MM)
    request, _ = pipeline.settle_profile(Request(**settings), volume)
    assert request.weights == weights


def test_an_mr_with_a_dicom_record_gets_the_profiles_mr_aware_weights():
    volume = read_volume(MR_SERIES)  # 0.9 mm slices 0.9 mm apart: contiguous slabs
    request, found = pipeline.settle_profile(Request(profile=None), volume)
    assert (found.source, request.profile, request.weights) == ("header", "average", "average_mr")
    ct = read_volume(PHILIPS)  # a CT with the same record keeps the CT weights
    assert pipeline.settle_profile(Request(profile=None), ct)[0].weights is None


def test_the_mr_weights_answer_an_mr_and_say_so():
    volume = read_volume(MR_3MM)
    result = pipeline.run(Request(profile=None).with_targets([target(20, 3.0, "factor", 2.0)]), volume)
    record = result.outputs[0].volume.metadata["super_resolution"]
    assert record["model"].endswith("mr.safetensors") and record["modality"] == "MR"
    assert result.slice_profile.describe().endswith("; the weights trained with MR")


def test_an_interpolation_needs_no_profile():
    volume = read_volume(CT_3MM)
    assert pipeline.settle_profile(Request(method="tricubic", profile=None), volume) == (
        Request(method="tricubic", profile=None), None)


def test_the_cli_line_and_the_output_record_say_it(tmp_path, capsys):
    output = tmp_path / "out.nii.gz"
    assert main(["upsample", str(PHILIPS), "-o", str(output), "--factor", "2", "-q"]) == 0
    assert main(["upsample", str(PHILIPS), "-o", str(tmp_path / "again.nii.gz"), "--factor", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(average.safetensors)" in line and line.endswith("slice profile: slab average, thickness 1 mm / spacing 1 mm, from DICOM")
    volume = read_volume(CT_3MM)
    result = pipeline.run(Request(profile=None).with_targets([target(30, 3.0, "factor", 2.0)]), volume)
    record = result.outputs[0].volume.metadata["super_resolution"]
    # the cue between its boundaries on this CT: a slab average as likely as not, the slab-average weights
    assert record["slice_profile"]["source"] == "model" and record["slice_profile"]["confidence"] == 0.5
    assert "as slab averages about as well as gaps" in record["slice_profile"]["description"]
    assert record["model"].endswith("average.safetensors")
    assert np.isfinite(result.outputs[0].volume.data).all()
    three = volume.replace(data=volume.data[:3].copy())  # too few slices to ask the model: not known
    result = pipeline.run(Request(profile=None).with_targets([target(3, 3.0, "factor", 2.0)]), three)
    record = result.outputs[0].volume.metadata["super_resolution"]
    assert record["slice_profile"]["source"] == "estimate" and record["model"].endswith("mixed.safetensors")


def test_a_dicom_series_in_and_a_new_series_out(tmp_path):
    """upsample SERIES_DIR -o OUT_DIR --format dicom: a new derived series with the output's exact geometry."""
    out = tmp_path / "sr_series"
    assert main(["upsample", str(PHILIPS), "-o", str(out), "--factor", "2", "--format", "dicom", "-q"]) == 0
    source, written = read_volume(PHILIPS), read_volume(out)
    assert written.shape == (4, *source.shape[1:])
    assert written.metadata["dicom"]["SeriesInstanceUID"] != source.metadata["dicom"]["SeriesInstanceUID"]
    expected = pipeline.run(Request(profile=None, method="tricubic").with_targets([target(2, 1.0, "factor", 2.0)]), source)
    assert np.allclose(written.affine, expected.outputs[0].volume.affine, atol=0.01)


def test_a_folder_of_scans_refuses_series_and_writes_dicom_series_when_asked(tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes(CT_3MM.read_bytes())
    assert main(["upsample", str(folder), "-o", str(tmp_path / "out"), "--factor", "2", "--series", "5"]) == 2
    assert "--series picks one DICOM series" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    command = ["upsample", str(folder), "-o", str(tmp_path / "out"), "--factor", "2", "--format", "dicom"]
    assert main([*command, "--method", "tricubic"]) == 0
    assert read_volume(tmp_path / "out" / "a").shape[0] == 2 * read_volume(CT_3MM).shape[0]  # a new series


@pytest.mark.parametrize(("scan", "modality", "weights", "source"),
                         [(CT_3MM, "CT", "average", "model"), (MR_3MM, "MR", "mr", "estimate")])
def test_evaluate_auto_scores_what_upsample_takes_with_no_profile(tmp_path, scan, modality, weights, source):
    from tests.test_cli import cycleinr

    report = tmp_path / "auto.json"
    result = cycleinr("evaluate", scan, "--factor", "2.5", "--degradation", "gaussian", "--modality", modality,
                      "--methods", f"auto,{weights}", f"--variant={weights}={weights}", "--json", report)
    assert result.returncode == 0, result.stderr
    assert f"auto: {weights}" in result.stdout
    (entry,) = json.loads(report.read_text())["results"]
    assert entry["auto"]["weights"] == weights and entry["auto"]["slice_profile"]["source"] == source
    assert entry["methods"]["auto"]["psnr"] == entry["methods"][weights]["psnr"]


def test_the_modality_is_settled_once_for_weights_and_intensities():
    """A file that says MR is normalised as MR and gets the MR weights, even where its values reach down to
    air as a CT's do (the weights and the normalisation never disagree)."""
    volume = read_volume(CT_3MM)
    volume.metadata["modality"] = "MR"
    result = pipeline.run(Request(profile=None).with_targets([target(30, 3.0, "factor", 2.0)]), volume)
    record = result.outputs[0].volume.metadata["super_resolution"]
    assert record["modality"] == "MR" and record["model"].endswith("mr.safetensors")


@pytest.mark.parametrize("truth", ["average", "skip", "gaussian"])
def test_the_fallback_weights_cycle_residuals_tell_the_profile(truth):
    """The bundled mixed-profile weights, degraded back, fit slab averages best as slab averages, skipped
    slices as gaps and Gaussian slices better as a Gaussian profile than as gaps (model/cycle_cue.py), on a
    held-out crop at x4 (10 thick slices, too few for the image's own Gaussian call)."""
    from napari_cycleinr.model.checkpoint import load_model
    from napari_cycleinr.model.cycle_cue import cycle_cues
    from napari_cycleinr.slice_profile import estimate, with_cycle_cue

    thin = read_volume(DATA / "ct_lidc0002_crop_128x128x40_1p25mm.nii.gz").data.astype(np.float32)
    thick = np.tensordot(profile_weights(len(thin), 4.0, truth).astype(np.float32), thin, axes=(1, 0))
    cues = cycle_cues(thick, 4.0, "CT", load_model("mixed"))
    gaps_sign = -1.0 if truth == "skip" else 1.0
    assert gaps_sign * cues.gaps_over_average > 0.1, cues
    assert (cues.gaussian_over_gaps < -0.1) == (truth == "gaussian"), cues
    found = with_cycle_cue(estimate(thick, (5.0, 1.25, 1.25), "CT"), cues, len(thick), "CT")
    assert (found.kind, found.source) == (truth, "model")


def test_slab_averages_the_image_reads_as_gaps_get_the_average_weights():
    """The bundled sample (a slab average of 16 slices) reads as gaps in the image; the fallback weights' cycle
    residual says slab average, so the specialist answers, and the record says why."""
    from napari_cycleinr._sample_data import sample_path

    volume = read_volume(sample_path("chest_ct_5mm.nii.gz"))
    result = pipeline.run(Request(profile=None).with_targets([target(16, 5.0, "factor", 4.0)]), volume)
    record = result.outputs[0].volume.metadata["super_resolution"]
    assert record["model"].endswith("average.safetensors") and result.profile == "average"
    assert record["slice_profile"]["source"] == "model" and record["slice_profile"]["kind"] == "average"
    assert "fits the slices best as slab averages" in result.slice_profile.describe()
