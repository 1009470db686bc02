"""The command line on every bad file and every bad parameter: exit code 2, exactly one line on stderr, no
traceback, no file created, and the input files byte for byte as they were (SHA-256 before and after).

Most runs call `cli.main` in this process (a torch import per case would cost minutes); a few run the real
`python -m napari_cycleinr.cli` process, where the exit status and stderr are the operating system's.
The parameter errors of `z_grid` itself are unit-tested in tests/test_grid.py; here they go through argparse,
the CLI and the run as a user types them.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest
import torch

from napari_cycleinr.io import read_volume
from tests.robust.bad_files import BY_KEY, NON_FINITE, READABLE, UNREADABLE
from tests.robust.surfaces import run_cli, run_cli_process

pytestmark = pytest.mark.usefixtures("untouched")

NOT_RUNNABLE = tuple(case for case in READABLE if case.run)
RUNNABLE = tuple(case for case in READABLE if not case.run)


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def assert_refused(result, pattern: str, out_dir) -> str:
    line = result.error_line  # exit 2, one line, no traceback
    assert re.search(pattern, line), line
    assert result.stdout == ""
    assert list(out_dir.iterdir()) == [], "a refused run left a file"
    return line


@pytest.mark.parametrize("case", UNREADABLE, ids=lambda c: c.key)
def test_unreadable_file_is_refused(bad_paths, out_dir, case):
    result = run_cli("upsample", bad_paths[case.key], "-o", out_dir / "sr.nii.gz", "--factor", "2")
    line = assert_refused(result, case.read, out_dir)
    assert f"cannot read {bad_paths[case.key]}" in line


@pytest.mark.parametrize("case", NOT_RUNNABLE, ids=lambda c: c.key)
def test_readable_file_that_cannot_be_super_resolved_is_refused(bad_paths, out_dir, case, tiny_checkpoint):
    args = ("upsample", bad_paths[case.key], "-o", out_dir / "sr.nii.gz", "--factor", "2")
    assert_refused(run_cli(*args, "--model", tiny_checkpoint), case.run, out_dir)
    assert_refused(run_cli(*args, "--method", "tricubic"), case.run, out_dir)


@pytest.mark.parametrize("case", RUNNABLE, ids=lambda c: c.key)
def test_odd_but_valid_file_is_super_resolved(bad_paths, out_dir, case, tiny_checkpoint):
    source = bad_paths[case.key]
    target = out_dir / "résultat ü" / f"sortie x2 {case.key}.nii.gz"
    target.parent.mkdir()
    with pytest.warns(UserWarning, match=case.warns) if case.warns else contextlib.nullcontext():
        result = run_cli("upsample", source, "-o", target, "--factor", "2", "--model", tiny_checkpoint, "-q")
        original = read_volume(source)
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary left
    # A NIfTI output keeps a NIfTI input's axis order; a TIFF input's z becomes the NIfTI's k.
    through = "xyz"[original.file_axes[0]] if original.metadata["format"] == "nifti" else "z"
    written = read_volume(target, axis=through)
    assert written.shape == (2 * original.shape[0], *original.shape[1:])
    assert written.data.dtype == original.data.dtype
    assert written.spacing[0] == pytest.approx(original.spacing[0] / 2, rel=1e-5)


FACTOR_MESSAGE = r"the factor must be a number above 1 and at most 16, got {}$"
NOT_FINER = r"the target spacing {} mm is not finer than the input's 5 mm$"
NOT_POSITIVE = r"the target spacing must be a positive number of mm, got {}$"
PARAMETERS = [
    (["--factor", "0"], FACTOR_MESSAGE.format("0")),
    (["--factor", "-1"], FACTOR_MESSAGE.format("-1")),
    (["--factor", "1"], FACTOR_MESSAGE.format("1")),
    (["--factor", "nan"], FACTOR_MESSAGE.format("nan")),
    (["--factor", "inf"], FACTOR_MESSAGE.format("inf")),
    (["--factor", "1000"], FACTOR_MESSAGE.format("1000")),
    (["--spacing", "6"], NOT_FINER.format("6")),  # coarser than the input
    (["--spacing", "5"], NOT_FINER.format("5")),  # the input's own spacing
    (["--spacing", "0"], NOT_POSITIVE.format("0.0")),
    (["--spacing", "-1"], NOT_POSITIVE.format("-1.0")),
    (["--spacing", "nan"], NOT_POSITIVE.format("nan")),
    (["--spacing", "inf"], NOT_POSITIVE.format("inf")),
    (
        ["--spacing", "0.001"],
        r"0\.001 mm is more than 16 times finer than the input's 5 mm; choose 0\.3125 mm",
    ),
    (["--factor", "2", "--device", "tpu"], r"unknown device 'tpu'; choose auto, cpu or cuda"),
    (["--factor", "2", "--device", "cuda:banana"], r"(unknown device|no CUDA GPU)"),
    (["--factor", "2", "--method", "cycleinr", "--device", "gpu"], r"unknown device 'gpu'"),
]


@pytest.mark.parametrize(
    ("args", "pattern"), PARAMETERS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_bad_parameter_is_refused_before_anything_is_written(bad_paths, out_dir, args, pattern):
    result = run_cli("upsample", bad_paths["uint8"], "-o", out_dir / "sr.nii.gz", *args)
    assert_refused(result, pattern, out_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_a_gpu_is_refused(bad_paths, out_dir, device):
    result = run_cli(
        "upsample", bad_paths["uint8"], "-o", out_dir / "sr.nii.gz", "--factor", "2", "--device", device
    )
    assert_refused(
        result, r"cuda was asked for but no CUDA GPU is available here; choose the cpu or auto device", out_dir
    )


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["{truncated_nii_gz}", "--factor", "2"], r"cannot read .*truncated\.nii\.gz: it is truncated"),
        (["{two_slices}", "--factor", "2,zero"], r"factors must be numbers like 2 or 2,2\.5,4, got '2,zero'"),
        (["{two_slices}", "--factor", ","], r"give at least one factor"),
        (["{two_slices}", "--factor", "2", "--degradation", "median"], r"unknown degradation 'median'"),
        (["{two_slices}", "--factor", "2", "--methods", "trilinear,magic"], r"unknown method\(s\) magic"),
        (["{two_slices}", "--factor", "2", "--variant", "nameless"], r"--variant takes NAME=CHECKPOINT"),
        (["{nan_voxels}", "--factor", "2"], NON_FINITE),
    ],
)
def test_evaluate_refuses_bad_references_and_parameters(bad_paths, out_dir, args, pattern):
    filled = [a.format(**bad_paths) for a in args]
    if "--methods" not in filled:
        filled += ["--methods", "trilinear"]  # no model to load: the refusal is about the input
    result = run_cli("evaluate", *filled, "--json", out_dir / "r.json", "--plot", out_dir / "p.png")
    assert_refused(result, pattern, out_dir)


def test_real_process_refuses_with_one_line_and_exit_2(bad_paths, out_dir):
    """The process boundary: nothing but our line reaches stderr (no library log lines, no traceback)."""
    for args, pattern in (
        ([bad_paths["truncated_tiff"], "--factor", "2"], r"truncated\.tif: it is truncated or damaged"),
        ([bad_paths["huge_header_nii_gz"], "--factor", "2"], r"1,000,000,000 voxels"),
        ([bad_paths["uint8"], "--factor", "inf"], FACTOR_MESSAGE.format("inf")),
    ):
        result = run_cli_process("upsample", args[0], "-o", out_dir / "sr.nii.gz", *args[1:])
        assert_refused(result, pattern, out_dir)


def test_real_process_says_when_it_assumes_1_mm(bad_paths, out_dir, tiny_checkpoint):
    source = bad_paths["tiff_without_spacing"]
    target = out_dir / "plain x2.tif"
    result = run_cli_process(
        "upsample", source, "-o", target, "--factor", "2", "--model", tiny_checkpoint, "-q"
    )
    assert result.code == 0, result.stderr
    assert re.search(BY_KEY["tiff_without_spacing"].warns, result.stderr), result.stderr
    assert "plain.tif" in result.stderr and "Traceback" not in result.stderr
    written = read_volume(target, axis="z")  # now 0.5 mm: z is no longer the coarsest axis
    assert written.shape == (8, 12, 10) and written.data.dtype == np.uint16


def test_a_folder_of_bad_files_reports_each_and_writes_only_the_good(bad_folder, tmp_path, untouched):
    """`cycleinr upsample DIR -o OUTDIR`: every bad file is one 'failed:' line with its reason, the others
    are written, nothing else appears, and the exit code is 1 (some failed), not a crash."""
    top_level = [case for case in BY_KEY.values() if "/" not in case.name]
    good = sorted(case.name for case in top_level if case.read is None and case.run is None)
    bad = {case.name: case.read or case.run for case in top_level if case.read is not None or case.run}
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="assuming 1 mm"):
        result = run_cli("upsample", bad_folder, "-o", out, "--factor", "2", "--method", "trilinear", "-q")
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{len(good)} written, 0 skipped (output exists), {len(bad)} failed" in result.stderr
    failed = dict(
        line.strip().removeprefix("failed: ").split(": ", 1)
        for line in result.stderr.splitlines()
        if line.strip().startswith("failed: ")
    )
    assert sorted(failed) == sorted(bad)
    for name, pattern in bad.items():
        assert re.search(pattern, failed[name]), (name, failed[name])
    assert sorted(p.name for p in out.iterdir()) == good  # no temporaries, nothing for the bad files
