"""The noise texture option (issue #21, texture.py): the scan's own noise, measured in flat tissue, drawn anew
for every output slice; the lines at the slab period fade; nothing outside the body changes; bad input is
explained before any work."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.texture import add_texture, measure_noise
from tests.conftest import CT_3MM, DATA
from tests.test_cli import cycleinr

LIDC_CROP = DATA / "ct_lidc0002_crop_128x128x40_1p25mm.nii.gz"

SIGMA = 10.0


def phantom(slices: int = 6, size: int = 96, sigma: float = 0.0, seed: int = 1) -> np.ndarray:
    """Air around a soft-tissue disk with a gentle ramp (anatomy that is not noise), plus white noise."""
    y, x = np.mgrid[0:size, 0:size] - size / 2
    disk = np.hypot(y, x) < 0.45 * size
    plane = np.where(disk, 40.0 + 0.3 * x, -1000.0)
    volume = np.repeat(plane[None], slices, axis=0).astype(np.float32)
    rng = np.random.default_rng(seed)
    return volume + np.where(disk, sigma * rng.standard_normal(volume.shape), 0.0).astype(np.float32)


def test_the_noise_level_is_measured_on_flat_tissue_not_on_anatomy():
    noise = measure_noise(phantom(sigma=SIGMA), -500.0)
    assert noise is not None and abs(noise.level - SIGMA) < 0.1 * SIGMA
    assert abs(float((noise.kernel.astype(np.float64) ** 2).sum()) - 1.0) < 1e-3  # unit variance through it
    smooth = measure_noise(phantom(sigma=0.0), -500.0)
    assert smooth is not None and smooth.level < 0.05  # the ramp is taken out, not read as noise


def test_nothing_to_measure_on_air():
    assert measure_noise(np.full((4, 64, 64), -1000.0, np.float32), -500.0) is None


def test_every_slice_gets_its_own_draw_inside_the_body_only_and_a_run_repeats():
    acquired = measure_noise(phantom(sigma=SIGMA), -500.0)
    clean = phantom(slices=8, sigma=0.0)
    first, second = clean.copy(), clean.copy()
    report = add_texture(first, acquired, strength=2.0, threshold=-500.0)
    add_texture(second, acquired, strength=2.0, threshold=-500.0)
    np.testing.assert_array_equal(first, second)
    assert report.added == pytest.approx(2 * SIGMA, rel=0.1)
    assert measure_noise(first, -500.0).level == pytest.approx(2 * SIGMA, rel=0.15)
    added = first - clean
    inside = np.hypot(*(np.mgrid[0:96, 0:96] - 48)) < 0.4 * 96
    correlation = np.corrcoef(added[3][inside], added[4][inside])[0, 1]
    assert abs(correlation) < 0.1, "neighbouring slices must not share their noise"
    assert np.array_equal(first[:, :3, :3], clean[:, :3, :3]), "air outside the body changed"
    assert report.summary().startswith(f"noise texture: added {report.added:.3g} of the scan's own noise")


def test_noise_the_acquisition_cannot_see_keeps_the_input_and_differs_most_inside_slabs():
    """With the degradation given, the noise adds nothing to any slab's average: the output degrades back
    onto the input as before; inside a slab the draws are anticorrelated, so neighbouring slices there differ
    sqrt(4/3) times more than across a border (4 slices a slab), at the level asked for."""
    from napari_cycleinr.slice_profile import profile_weights

    acquired = measure_noise(phantom(sigma=SIGMA), -500.0)
    clean = phantom(slices=40, sigma=0.0)
    unseen = profile_weights(40, 4.0, "average")
    textured = clean.copy()
    add_texture(textured, acquired, strength=1.0, threshold=-500.0, unseen=unseen)
    degraded = np.tensordot(unseen, textured - clean, axes=1)
    assert np.abs(degraded).max() < 1e-3
    inside = np.hypot(*(np.mgrid[0:96, 0:96] - 48)) < 0.4 * 96
    added = (textured - clean)[:, inside]
    assert added.std() == pytest.approx(SIGMA, rel=0.15)
    steps = np.abs(np.diff(added, axis=0)).mean(axis=1)
    across = steps[3::4]  # between slices 3 and 4, 7 and 8, ...: the slab borders
    within = np.delete(steps, np.s_[3::4])
    assert within.mean() / across.mean() == pytest.approx(np.sqrt(4 / 3), rel=0.05)


def test_integer_outputs_stay_integers_and_in_range_and_strength_zero_changes_nothing():
    acquired = measure_noise(phantom(sigma=SIGMA), -500.0)
    volume = np.clip(phantom(slices=4, sigma=0.0), -1024, 3071).astype(np.int16)
    volume[:, 40:44, 40:44] = 32767  # a saturated spot must not wrap round
    untouched = volume.copy()
    add_texture(volume, acquired, strength=0.0, threshold=-500.0)
    np.testing.assert_array_equal(volume, untouched)
    add_texture(volume, acquired, strength=2.0, threshold=-500.0)
    assert volume.dtype == np.int16 and volume[:, 41, 41].min() > 30000
    assert not np.array_equal(volume, untouched)


def test_the_job_fades_the_lines_on_real_ct_and_records_what_it_added():
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.model.metrics import banding
    from napari_cycleinr.pipeline import run
    from napari_cycleinr.request import Request, target

    thin = read_volume(LIDC_CROP)
    thick_data = thin.data[:40].astype(np.float32).reshape(10, 4, *thin.shape[1:]).mean(axis=1)
    thick = thin.replace(data=thick_data, affine=thin.affine @ np.diag([4.0, 1, 1, 1]))
    grid = (target(10, thick.spacing[0], "factor", 4.0),)
    plain = run(Request(targets=grid, method="tricubic", keep_dtype=False), thick).outputs[0].volume
    steps = []
    done = run(Request(targets=grid, method="tricubic", keep_dtype=False, texture=1.0), thick, steps.append).outputs[0]
    assert banding(done.volume.data, 4.0) < banding(plain.data, 4.0)
    record = done.volume.metadata["super_resolution"]["noise_texture"]
    assert record["strength"] == 1.0 and record["added_noise"] > 0 and record["acquired_noise"] > 0
    assert [s.phase for s in steps if s.phase.startswith("text")] == ["texture", "textured"]


def test_a_scan_with_no_flat_tissue_is_explained_before_any_work(ct_volume):
    from napari_cycleinr.pipeline import run
    from napari_cycleinr.request import Request, target

    air = ct_volume.replace(data=np.full((10, 64, 64), -1000, np.int16))
    steps = []
    with pytest.raises(CycleINRError, match="noise texture"):
        run(Request(targets=(target(10, 5.0, "factor", 2.0),), method="tricubic", texture=0.5), air, steps.append)
    assert not [s for s in steps if s.phase == "target"]


@pytest.mark.parametrize("value", ["2.5", "-0.1", "nan"])
def test_the_cli_refuses_a_strength_outside_0_to_1(tmp_path, value):
    out = tmp_path / "out.nii.gz"
    result = cycleinr("upsample", CT_3MM, "--factor", "2", "--texture", value, "-o", out)
    assert result.returncode == 2 and "noise texture strength must be 0 to 2" in result.stderr
    assert not out.exists()


def test_cancel_during_the_texture_stops_the_job():
    from napari_cycleinr.errors import Cancelled
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.pipeline import run
    from napari_cycleinr.request import Request, target

    thin = read_volume(LIDC_CROP)
    thick = thin.replace(data=thin.data[::4].copy(), affine=thin.affine @ np.diag([4.0, 1, 1, 1]))
    phases = []

    def cancel() -> bool:
        return "texture" in phases  # the user presses Cancel once the texture has started

    request = Request(targets=(target(10, thick.spacing[0], "factor", 4.0),), method="tricubic", texture=1.0)
    with pytest.raises(Cancelled):
        run(request, thick, lambda step: phases.append(step.phase), cancel)
    assert "textured" not in phases


def test_with_exact_consistency_the_textured_output_still_reproduces_the_input():
    """The job's texture is unseen by the slice profile: consistency first, texture after, and the output
    degraded back still equals the input."""
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.model.consistency import consistency_residual
    from napari_cycleinr.pipeline import run
    from napari_cycleinr.request import Request, target

    thin = read_volume(LIDC_CROP)
    thick_data = thin.data[:40].astype(np.float32).reshape(10, 4, *thin.shape[1:]).mean(axis=1)
    thick = thin.replace(data=thick_data, affine=thin.affine @ np.diag([4.0, 1, 1, 1]))
    request = Request(targets=(target(10, thick.spacing[0], "factor", 4.0),), method="tricubic", keep_dtype=False,
                      consistency=True, texture=1.0, profile="average", profile_source="user")
    done = run(request, thick).outputs[0]
    assert done.texture.added > 0
    assert consistency_residual(done.volume.data, thick.data).rms < 1e-3
