"""The slice profile, known rather than asked: the user's choice, the DICOM record, the image estimate."""

import numpy as np
import pytest

from napari_cycleinr import slice_profile
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.degrade import degradation_matrix
from tests.conftest import DATA

LIDC = DATA / "ct_lidc0002_crop_128x128x40_1p25mm.nii.gz"


@pytest.mark.parametrize("kind", ["average", "gaussian", "skip"])
@pytest.mark.parametrize("ratio", [2.5, 4.0])
def test_numpy_weights_are_the_training_operator(kind, ratio):
    weights = slice_profile.profile_weights(40, ratio, kind)
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert np.allclose(weights, degradation_matrix(40, ratio, kind).numpy(), atol=1e-12)


@pytest.mark.parametrize(
    ("thickness", "spacing", "kind"),
    [(1.0, 5.0, "skip"), (5.0, 5.0, "average"), (4.5, 5.0, "average"), (7.5, 5.0, "gaussian"),
     (4.0, 4.00193, "average")],  # a spacing measured from rounded positions shows as DICOM states it
)
def test_dicom_record_names_the_profile(thickness, spacing, kind):
    found = slice_profile.from_record({"slice_thickness_mm": thickness, "slice_spacing_mm": spacing})
    assert found.kind == kind and found.source == "header"
    assert found.thickness == pytest.approx(thickness / spacing)
    assert f"thickness {thickness:g} mm / spacing {round(spacing, 2):g} mm, from DICOM" in found.describe()


@pytest.mark.parametrize("record", [{}, {"slice_thickness_mm": None, "slice_spacing_mm": 5.0},
                                    {"slice_thickness_mm": 0.0, "slice_spacing_mm": 5.0},
                                    {"slice_thickness_mm": "abc", "slice_spacing_mm": 5.0},
                                    {"slice_thickness_mm": float("nan"), "slice_spacing_mm": 5.0}])
def test_no_usable_record_is_no_record(record):
    assert slice_profile.from_record(record) is None


def thick_scan(kind, factor=4.0):
    volume = read_volume(LIDC)
    matrix = slice_profile.profile_weights(volume.shape[0], factor, kind).astype(np.float32)
    data = np.tensordot(matrix, volume.data.astype(np.float32), axes=(1, 0))
    return data, (volume.spacing[0] * factor, volume.spacing[1], volume.spacing[2])


def test_the_image_orders_the_profiles_on_a_real_ct():
    """Wider profiles leave smoother through-plane lines: the position falls from gaps to Gaussian."""
    positions = {kind: slice_profile.profile_position(*thick_scan(kind), "CT") for kind in ("skip", "average", "gaussian")}
    assert positions["gaussian"] < positions["average"] < positions["skip"]


@pytest.mark.parametrize(("kind", "shared"), [("gaussian", 0.25), ("average", 0.0), ("skip", 0.0)])
def test_overlapping_profiles_share_noise(kind, shared):
    """Thin slices of pure noise: a Gaussian of FWHM = spacing shares exp(-ln 16 / 4) = 0.25 of it between
    neighbouring thick slices, contiguous slabs and gaps none."""
    rng = np.random.default_rng(1)
    thin = 40.0 + 20.0 * rng.standard_normal((160, 96, 96)).astype(np.float32)
    matrix = slice_profile.profile_weights(len(thin), 4.0, kind).astype(np.float32)
    thick = np.tensordot(matrix, thin, axes=(1, 0))
    assert slice_profile.shared_noise(thick, "CT") == pytest.approx(shared, abs=0.03)
    if kind == "gaussian":
        assert slice_profile.gaussian_width(slice_profile.shared_noise(thick, "CT")) == pytest.approx(1.0, abs=0.1)


def test_a_gaussian_profile_is_known_from_the_image():
    """Both cues agree on a real CT of 16 Gaussian-profiled slices: confident, and the width about right."""
    data, spacing = thick_scan("gaussian", 2.5)
    assert len(data) == slice_profile.CONFIDENT_SLICES
    found = slice_profile.estimate(data, spacing, "CT")
    assert found.kind == "gaussian" and found.confident and found.thickness == pytest.approx(1.0, abs=0.25)
    assert "estimated from the image: smooth along z, noise shared between slices" in found.describe()


@pytest.mark.parametrize("kind", ["average", "skip"])
def test_slab_average_against_gaps_is_only_a_hint(kind):
    found = slice_profile.estimate(*thick_scan(kind, 2.5), "CT")
    assert not found.confident and found.kind != "gaussian"


def test_too_few_slices_are_never_confident():
    data, spacing = thick_scan("gaussian", 4.0)  # 10 slices
    found = slice_profile.estimate(data, spacing, "CT")
    assert found.kind == "gaussian" and not found.confident


def test_precedence_user_then_record_then_image():
    data, spacing = thick_scan("skip")
    record = {"slice_thickness_mm": 5.0, "slice_spacing_mm": 5.0}
    assert slice_profile.find_profile(data, spacing, "CT", record, chosen="gaussian").source == "user"
    assert slice_profile.find_profile(data, spacing, "CT", record).kind == "average"
    estimated = slice_profile.find_profile(data, spacing, "CT", {})
    assert estimated.source == "estimate" and 0.0 <= estimated.confidence <= slice_profile.IMAGE_CONFIDENCE
    assert not estimated.confident  # gaps are only ever a hint
    assert "not known (the image suggests" in estimated.describe()


def test_a_uniform_scan_cannot_be_told():
    flat = np.zeros((12, 64, 64), dtype=np.float32)
    found = slice_profile.estimate(flat, (5.0, 0.7, 0.7), "CT")
    assert found.confidence == 0.0 and not found.confident and found.kind == "average"


def test_a_long_scan_is_read_in_its_middle_block():
    """A bounded cost and memory on a scan of any length: the middle ESTIMATE_SLICES slices, central square."""
    long = np.arange(400, dtype=np.int16)[:, None, None] * np.ones((1, 300, 300), np.int16)
    block = slice_profile.central_block(long)
    assert block.shape == (slice_profile.ESTIMATE_SLICES, 256, 256) and block.dtype == np.float32
    assert block[0, 0, 0] == (400 - slice_profile.ESTIMATE_SLICES) // 2


@pytest.mark.parametrize(("position", "modality", "kind", "confident"), [
    (0.75, "MR", "gaussian", True),  # MR: the noise names it where the position does not say gaps
    (0.75, "CT", "average", False),  # CT: both cues must say Gaussian (thin slices can share noise over borders)
    (1.2, "MR", "skip", False),  # the position says gaps: never Gaussian weights, which fall below tricubic there
])
def test_on_mr_the_position_need_only_not_say_gaps(monkeypatch, position, modality, kind, confident):
    data, spacing = thick_scan("average", 2.5)  # 16 slices: long enough to be confident
    monkeypatch.setattr(slice_profile, "profile_position", lambda *args: position)
    monkeypatch.setattr(slice_profile, "shared_noise", lambda *args: 0.3)
    found = slice_profile.estimate(data, spacing, modality)
    assert (found.kind, found.confident) == (kind, confident)
    assert found.source == "estimate" and f"position {position:.2f}, shared noise 0.30" == found.detail


def _unsure(kind: str = "skip", position: float | None = 1.1) -> slice_profile.SliceProfile:
    return slice_profile.SliceProfile(kind, 1.0, "estimate", 0.45, "position 1.10, shared noise 0.05",
                                      position=position)


@pytest.mark.parametrize(
    ("gaps", "gaussian", "position", "slices", "kind", "source", "modality"),
    [
        (0.2, 0.5, 1.1, 16, "average", "model", "CT"),  # the answer fits slab averages: the image's gaps overruled
        (0.2, -0.3, 1.1, 16, "gaussian", "model", "CT"),  # ... and a Gaussian profile better still than gaps
        (0.2, -0.05, 1.1, 16, "average", "model", "CT"),  # not by enough: a slab average
        (-0.5, 1.0, 1.1, 16, "skip", "model", "CT"),  # gaps on both cues
        (-0.5, -0.3, 1.1, 16, "skip", "model", "CT"),  # on the gaps side a Gaussian residual is not asked
        (-0.5, 1.0, 0.7, 16, "skip", "estimate", "CT"),  # the model says gaps, the image reads smooth: not acted on
        (-0.5, 1.0, None, 16, "skip", "estimate", "CT"),  # no position (a phantom): gaps are never taken
        (0.0, -0.3, 1.1, 16, "average", "model", "CT"),  # between the boundaries: a CT's slab average, leaning
        (0.0, -0.3, 1.1, 16, "skip", "estimate", "MR"),  # ... an MR's not known (`mr` answers)
        (-0.12, 1.0, 0.7, 16, "skip", "estimate", "CT"),  # gaps side, vetoed by the image: not known
        (0.2, -0.3, 1.1, 6, "average", "model", "CT"),  # a short scan: a slab average, never Gaussian
        (-0.5, 1.0, 1.1, 4, "skip", "model", "CT"),  # gaps, from 4 thick slices
        (0.2, 0.5, 1.1, 3, "skip", "estimate", "CT"),  # too few slices
        (float("nan"), float("nan"), 1.1, 16, "skip", "estimate", "CT"),
    ],
)
def test_the_cycle_cues_settle_what_the_image_cannot(gaps, gaussian, position, slices, kind, source, modality):
    cues = slice_profile.CycleCues(gaps, gaussian)
    found = slice_profile.with_cycle_cue(_unsure(position=position), cues, slices, modality)
    assert (found.kind, found.source, found.confident) == (kind, source, source == "model")
    if source == "model":
        said = "best as" if found.confidence > slice_profile.LEANING else "as slab averages about as well as gaps"
        assert f"fits the slices {said}" in found.describe() and found.to_record()["source"] == "model"
        assert "cycle residual gaps / slab average" in found.to_record()["cues"]
        assert "Gaussian / gaps" in found.to_record()["cues"]


def test_the_cycle_cue_never_overrules_a_confident_or_recorded_profile():
    sure = slice_profile.SliceProfile("gaussian", 1.1, "estimate", 1.0, "")
    assert slice_profile.with_cycle_cue(sure, slice_profile.CycleCues(-1.0, 1.0), 40, "CT") is sure
    recorded = slice_profile.from_record({"slice_thickness_mm": 1.0, "slice_spacing_mm": 5.0})
    assert slice_profile.with_cycle_cue(recorded, slice_profile.CycleCues(1.0, -1.0), 40, "CT") is recorded
