"""The command line, run as a user runs it: a real process, real files, exit codes and stderr."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CT_3MM, MR_3MM

ROOT = Path(__file__).resolve().parents[1]


def cycleinr(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "napari_cycleinr.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_upsample_with_the_bundled_model_keeps_geometry(tmp_path):
    from napari_cycleinr.io import read_volume

    out = tmp_path / "sr.nii.gz"
    result = cycleinr("upsample", CT_3MM, "-o", out, "--factor", "2.5", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "30 -> 75 slices" in result.stdout
    source, written = read_volume(CT_3MM), read_volume(out)  # the header's slice axis keeps z as z
    assert written.shape == (75, *source.shape[1:]) and written.data.dtype == source.data.dtype
    assert written.spacing == pytest.approx((1.2, 3.0, 3.0), rel=1e-5)
    assert np.allclose(written.affine @ [-0.5, 0, 0, 1], source.affine @ [-0.5, 0, 0, 1], atol=1e-4)
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_the_bundled_weights_by_name_and_by_slice_profile(tmp_path):
    out = tmp_path / "sr.nii.gz"
    for choice, weights in [
        ([], "average"),  # the model's cue between its boundaries on this CT: the slab-average weights answer
        (["--model", "mixed"], "mixed"), (["--profile", "skip"], "skip"),
        (["--model", "average", "--profile", "skip"], "average"),
    ]:
        result = cycleinr("upsample", CT_3MM, "-o", out, "--factor", "2", "--device", "cpu", *choice)
        assert result.returncode == 0 and out.is_file(), result.stderr
        assert f"cycleinr ({weights}.safetensors) on cpu" in result.stdout, (choice, result.stdout)
    missing = cycleinr("upsample", CT_3MM, "-o", out, "--factor", "2", "--model", "averag.safetensors")
    assert missing.returncode == 2 and "averag.safetensors" in missing.stderr


def test_spacing_tiff_output_and_baselines(tmp_path, tiny_checkpoint):
    out = tmp_path / "sr.tif"
    result = cycleinr("upsample", MR_3MM, "-o", out, "--spacing", "1.5", "--model", tiny_checkpoint, "--float", "-q")
    assert result.returncode == 0, result.stderr
    from napari_cycleinr.io import read_volume

    written = read_volume(out)
    assert written.shape[0] == 40 and written.spacing[0] == pytest.approx(1.5, rel=1e-4)
    for method in ("trilinear", "tricubic"):
        assert cycleinr("upsample", CT_3MM, "-o", tmp_path / f"{method}.nii", "--factor", "2", "--method", method).returncode == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["upsample", "missing.nii.gz", "-o", "{out}", "--factor", "2"], "no such file"),
        (["upsample", CT_3MM, "-o", "{out}", "--factor", "1"], "above 1"),
        (["upsample", CT_3MM, "-o", "{out}", "--factor", "nan"], "above 1"),
        (["upsample", CT_3MM, "-o", "{out}", "--factor", "17"], "at most 16"),
        (["upsample", CT_3MM, "-o", "{out}", "--spacing", "4"], "not finer"),
        (["upsample", CT_3MM, "-o", "{out}", "--factor", "2", "--device", "tpu"], "unknown device"),
        (["upsample", CT_3MM, "-o", "{out}", "--factor", "2", "--device", "cuda"], "no CUDA GPU"),
        (["upsample", CT_3MM, "-o", CT_3MM, "--factor", "2"], "input file"),
        (["upsample", CT_3MM, "-o", "{tmp}/out.png", "--factor", "2"], "cannot write"),
        (["upsample", CT_3MM, "-o", "{out}", "--factor", "2", "--model", "{tmp}/evil.pt"], "not a napari-cycleinr checkpoint"),
        (["upsample", "{tmp}/text.nii", "-o", "{out}", "--factor", "2"], "text.nii"),
        (["upsample", "{tmp}/flat.nii.gz", "-o", "{out}", "--factor", "2"], "flat.nii.gz"),
        (["upsample", "{tmp}/nan.nii.gz", "-o", "{out}", "--factor", "2"], "NaN"),
        (["evaluate", CT_3MM, "--factor", "2", "--degradation", "median"], "unknown degradation"),
        (["adapt", CT_3MM, "-o", "{out}", "--factor", "2", "--minutes", "0"], "minutes"),
        (["adapt", CT_3MM, "-o", "{out}", "--factor", "2", "--thickness", "9"], "thickness"),
        (["adapt", CT_3MM, "-o", "{out}", "--factor", "2", "--noise-weight", "-1"], "noise weight"),
        (["adapt", "{tmp}", "-o", "{out}", "--factor", "2"], "one scan at a time"),
        (["upsample", CT_3MM, "-o", "{out}", "--factor", "2", "--consistency-smoothing", "-1"], "smoothing"),
        (["upsample", CT_3MM, "-o", "{out}", "--factor", "2", "--consistency-smoothing", "1"], "add --consistency"),
        (["upsample", "{tmp}", "-o", "{tmp}/out", "--factor", "2", "--consistency-smoothing", "1"], "add --consistency"),
        (["adapt", CT_3MM, "-o", "{out}", "--factor", "2", "--save-model", "{tmp}/model.pt"], "writes a .safetensors"),
    ],
)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    import nibabel as nib

    (tmp_path / "text.nii").write_text("this is not a NIfTI file\n")
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04not really a pickle")
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), tmp_path / "flat.nii.gz")
    bad = np.zeros((8, 8, 4), np.float32)
    bad[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(bad, np.diag([1, 1, 5, 1])), tmp_path / "nan.nii.gz")
    before = sorted(p.name for p in tmp_path.iterdir())
    filled = [str(a).format(out=tmp_path / "out.nii.gz", tmp=tmp_path) for a in args]
    result = cycleinr(*filled)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_adapt_fine_tunes_then_writes_a_consistent_output_and_the_model(tmp_path, tiny_checkpoint):
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.model.checkpoint import load_model
    from napari_cycleinr.model.consistency import consistency_residual

    out, kept = tmp_path / "sr.nii.gz", tmp_path / "adapted.safetensors"
    result = cycleinr(
        "adapt", CT_3MM, "-o", out, "--factor", "2", "--steps", "3", "--consistency", "--model", tiny_checkpoint,
        "--save-model", kept, "--device", "cpu",
    )
    assert result.returncode == 0, result.stderr
    assert "adapted for 3 steps" in result.stdout and "data consistency (average profile)" in result.stdout
    source, written = read_volume(CT_3MM), read_volume(out)
    assert written.shape == (60, *source.shape[1:])
    assert consistency_residual(written.data, source.data).max <= 0.5 + 1e-6
    assert load_model(kept).info["adaptation"]["steps"] == 3
    assert oct(kept.stat().st_mode & 0o777) != oct(0o600)  # a model to share, not a private file


def test_upsample_consistency_lowers_the_residual(tmp_path, tiny_checkpoint):
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.model.consistency import consistency_residual

    plain, exact, smooth = tmp_path / "plain.nii.gz", tmp_path / "exact.nii.gz", tmp_path / "smooth.nii.gz"
    consistency = ["--consistency", "--profile", "gaussian"]
    for path, extra in ((plain, []), (exact, consistency), (smooth, [*consistency, "--consistency-smoothing", "1"])):
        result = cycleinr("upsample", CT_3MM, "-o", path, "--factor", "3", "--model", tiny_checkpoint, "-q", *extra)
        assert result.returncode == 0, result.stderr
    source = read_volume(CT_3MM).data
    before = consistency_residual(read_volume(plain).data, source, "gaussian")
    after = consistency_residual(read_volume(exact).data, source, "gaussian")
    assert after.max <= 0.5 + 1e-6 < before.max
    assert after.rms < consistency_residual(read_volume(smooth).data, source, "gaussian").rms < before.rms


def test_upsample_ensemble_averages_two_passes_and_is_refused_for_interpolation(tmp_path, tiny_checkpoint):
    from napari_cycleinr.io import read_volume

    plain, both = tmp_path / "plain.nii.gz", tmp_path / "both.nii.gz"
    for path, extra in ((plain, []), (both, ["--ensemble"])):
        result = cycleinr("upsample", CT_3MM, "-o", path, "--factor", "2", "--model", tiny_checkpoint, *extra)
        assert result.returncode == 0, result.stderr
    assert f"cycleinr ({Path(tiny_checkpoint).name}, z ensemble) on cpu" in result.stdout
    difference = read_volume(both).data.astype(float) - read_volume(plain).data
    assert 0 < np.abs(difference).max() < 200
    out = tmp_path / "tricubic.nii.gz"
    refused = cycleinr("upsample", CT_3MM, "-o", out, "--factor", "2", "--method", "tricubic", "--ensemble")
    assert refused.returncode == 2 and "cycleinr method" in refused.stderr and not out.exists()


SAMPLE = ROOT / "src/napari_cycleinr/sample_data"


def test_upsample_against_a_real_thin_scan_prints_its_scores(tmp_path, tiny_checkpoint):
    from napari_cycleinr.io import read_volume
    from napari_cycleinr.model.evaluate import reference_scores, scores_summary

    thick, thin, out = SAMPLE / "chest_ct_5mm.nii.gz", SAMPLE / "chest_ct_1p25mm.nii.gz", tmp_path / "sr.nii.gz"
    result = cycleinr("upsample", thick, "-o", out, "--spacing", "1.25", "--model", tiny_checkpoint, "--reference", thin)
    assert result.returncode == 0, result.stderr
    expected = scores_summary(reference_scores(read_volume(thin).data, read_volume(out).data, "CT"))
    assert f"against {thin}: {expected}" in result.stdout

    before = thin.read_bytes()
    for args, message in [
        (["--spacing", "2.5"], "lands on its grid"),  # 32 slices against the reference's 64
        (["--spacing", "1.25", "-o", str(thin)], "input"),  # never written over, though it is only a reference
    ]:
        arguments = ["upsample", thick, "-o", tmp_path / "other.nii.gz", "--reference", thin, *args]
        refused = cycleinr(*arguments)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert thin.read_bytes() == before and not (tmp_path / "other.nii.gz").exists()
    folder = cycleinr("upsample", SAMPLE, "-o", tmp_path / "outs", "--factor", "2", "--reference", thin)
    assert folder.returncode == 2 and "not a folder" in folder.stderr


def test_evaluate_prints_a_table_and_writes_json_and_plot(tmp_path, tiny_checkpoint):
    from tests.conftest import CT_HEAD

    report, plot = tmp_path / "r.json", tmp_path / "snli.png"
    result = cycleinr(
        "evaluate", CT_3MM, CT_HEAD, "--factor", "2,2.5", "--model", tiny_checkpoint,
        "--variant", f"grid={tiny_checkpoint}", "--methods", "trilinear,tricubic,cycleinr,grid",
        "--json", report, "--plot", plot,
    )
    assert result.returncode == 0, result.stderr
    assert "tricubic" in result.stdout and "PSNR" in result.stdout
    results = json.loads(report.read_text())["results"]
    assert len(results) == 4
    for entry in results:
        assert set(entry["methods"]) == {"trilinear", "tricubic", "cycleinr", "grid"}
        assert all(25 < m["psnr"] < 80 and 0 < m["ssim"] <= 1 for m in entry["methods"].values())
    assert plot.stat().st_size > 10_000


def test_evaluate_takes_bundled_weights_by_name_and_names_them_when_refusing(tmp_path):
    report = tmp_path / "r.json"
    typed = CT_3MM.relative_to(ROOT)
    result = cycleinr("evaluate", typed, "--factor", "2", "--methods", "tricubic,mixed", "--json", report, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    scored = json.loads(report.read_text())["results"][0]
    assert scored["reference"] == str(typed)  # as typed, not this machine's absolute path
    scores = scored["methods"]
    assert set(scores) == {"tricubic", "mixed"} and scores["mixed"]["psnr"] > scores["tricubic"]["psnr"]
    refused = cycleinr("evaluate", CT_3MM, "--factor", "2", "--methods", "tricubic,mixd")
    assert refused.returncode == 2 and "mixd" in refused.stderr and "average_mr" in refused.stderr, refused.stderr


def test_train_command_writes_checkpoints(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        "[model]\nchannels = 8\nblocks = 1\nheads = 2\ndecoder_width = 16\n"
        "[train]\nsteps = 4\nbatch = 1\nthick_slices = 3\ncrop = 24\nquery_pixels = 64\nscale_max = 2.5\n"
        "validation_every = 4\ncheckpoint_every = 4\nlog_every = 2\nwarmup_steps = 1\n"
    )
    result = cycleinr("train", "--data", CT_3MM, "--out", tmp_path / "run", "--config", config, "--seed", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "last.safetensors").is_file() and (tmp_path / "run" / "state.pt").is_file()
    assert "best validation PSNR" in result.stdout


def test_warnings_print_as_one_line(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", np.arange(6 * 16 * 16, dtype=np.int16).reshape(6, 16, 16))
    result = cycleinr("upsample", tmp_path / "plain.tif", "-o", tmp_path / "out.tif", "--factor", "2", "--method", "tricubic", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "cycleinr: warning: plain.tif: voxel spacing not fully known (no ImageJ or OME metadata); "
        "assuming 1 mm where it is missing"
    ]


def test_json_and_plots_never_land_on_a_model_or_its_sidecar(tmp_path, tiny_checkpoint):
    """evaluate and benchmark refuse, before any work, a --json or --plot that is a model being read or the
    JSON sidecar beside it (one line, exit 2, nothing changed)."""
    sidecar = Path(tiny_checkpoint).with_suffix(".json")
    kept = {p: p.read_bytes() for p in (Path(tiny_checkpoint), sidecar)}
    for argv in (
        ["evaluate", CT_3MM, "--factor", "2", "--methods", "trilinear", "--variant", f"tiny={tiny_checkpoint}",
         "--json", sidecar],
        ["evaluate", CT_3MM, "--factor", "2", "--methods", "trilinear", "--plot", CT_3MM],
        ["benchmark", "--model", tiny_checkpoint, "--json", sidecar, "--sizes", "16x16x6", "--scaling="],
    ):  # fmt: skip
        refused = cycleinr(*argv)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1 and "input of this run" in lines[0], refused.stderr
        assert refused.stdout == ""  # refused before the evaluation or the benchmark ran
    assert all(p.read_bytes() == data for p, data in kept.items())
