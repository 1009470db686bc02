"""The benchmark runs end to end at tiny sizes and reports what it promises; no timing is asserted."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr import bench as benchmark
from napari_cycleinr.bench import (
    Case,
    PeakMemory,
    benchmark_volume,
    fit_shape,
    format_report,
    parse_counts,
    parse_sizes,
    run_benchmark,
    run_isolated,
    scaling_summary,
)

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = {
    "method", "size", "input_shape", "output_shape", "factor", "device", "threads", "seconds",
    "output_voxels", "output_mb", "voxels_per_second", "peak_rss_mb", "rss_increase_mb", "working_memory_mb",
    "peak_cuda_mb", "memmap", "precision",
}


def test_volumes_are_real_ct_cropped_or_mirrored_to_size():
    volume = benchmark_volume((20, 40, 300))  # sample is 16 x 224 x 224: crop y, mirror z and x
    assert volume.shape == (20, 40, 300) and volume.data.dtype == np.int16
    assert volume.spacing[0] == pytest.approx(5.0)
    assert volume.data.min() < -900 and volume.data.max() > 0  # air and tissue: real CT
    data = np.arange(24).reshape(2, 3, 4)
    mirrored = fit_shape(data, (5, 3, 2))
    assert mirrored.shape == (5, 3, 2)
    assert np.array_equal(mirrored[1:3, :, :], data[:, :, 1:3])  # the original sits in the middle


def test_a_tiny_benchmark_reports_every_figure(tmp_path):
    quiet = lambda line: None  # noqa: E731
    sizes = ((6, 24, 28),)
    report = run_benchmark(sizes=sizes, scaling=(4, 8), factor=5.0, device="cpu", isolate=False, log=quiet)
    json.dumps(report)  # plain types only
    assert {"version", "factor", "machine", "results", "cycleinr_over_tricubic", "scaling"} <= set(report)
    assert [r["method"] for r in report["results"]] == ["cycleinr", "tricubic", "trilinear"]
    for result in report["results"] + report["scaling"]["points"]:
        assert set(result) == RESULT_KEYS
        assert result["seconds"] >= 0 and result["voxels_per_second"] > 0 and result["peak_rss_mb"] > 0
        assert result["output_voxels"] == int(np.prod(result["output_shape"]))
    first = report["results"][0]
    assert first["size"] == "28x24x6" and first["output_shape"] == [30, 24, 28]
    assert set(report["cycleinr_over_tricubic"]) == {"28x24x6"}
    scaling = report["scaling"]
    assert [p["input_shape"][0] for p in scaling["points"]] == [4, 8]
    assert all(p["memmap"] for p in scaling["points"])
    assert {"seconds_per_input_slice", "r2", "linear", "memory_spread_mb", "flat_memory"} <= set(scaling)
    assert scaling["output_growth_mb"] > 0
    assert report["machine"]["cores_available"] >= 1 and "load_average_start" in report["machine"]
    text = format_report(report)
    assert "CycleINR / tricubic time at 28x24x6" in text and "s per input slice" in text


def test_scaling_summary_tells_linear_from_not():
    slices = [30, 60, 120, 240]
    linear = scaling_summary(slices, [1 + 0.1 * n for n in slices], [200, 205, 198, 210], [30, 60, 120, 240])
    assert linear["linear"] and linear["flat_memory"]
    assert linear["seconds_per_input_slice"] == pytest.approx(0.1)
    assert linear["intercept_seconds"] == pytest.approx(1.0) and linear["r2"] == pytest.approx(1.0)
    output = [30, 60, 120, 240]
    quadratic = scaling_summary(slices, [0.001 * n * n for n in slices], [200, 400, 800, 1600], output)
    assert not quadratic["linear"] and not quadratic["flat_memory"]
    with pytest.raises(CycleINRError):
        scaling_summary([60, 60], [1.0, 1.1], [1, 1])


def test_peak_memory_sees_a_short_lived_allocation():
    with PeakMemory() as memory:
        block = np.ones(40 * 2**20 // 8)  # 40 MB, touched
        time.sleep(0.05)
        del block
    assert memory.peak[0] - memory.start[0] > 30


def test_an_isolated_case_runs_in_its_own_process():
    result = run_isolated(Case("trilinear", (4, 16, 16), device="cpu", warmup=False))
    assert result["method"] == "trilinear" and result["peak_rss_mb"] > 0 and result["device"] == "cpu"


def test_size_and_count_parsing():
    assert parse_sizes("256x256x60, 512x512x60") == ((60, 256, 256), (60, 512, 512))
    assert parse_counts("30,60") == (30, 60) and parse_counts("") == ()
    for bad in ("256x256", "axbxc", "4x4x60"):
        with pytest.raises(CycleINRError):
            parse_sizes(bad)
    with pytest.raises(CycleINRError):
        parse_counts("30,1")


def test_cli_benchmark_writes_json_and_refuses_nonsense(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "napari_cycleinr.cli", "benchmark"]
    run = lambda *a: subprocess.run(  # noqa: E731
        [*command, *map(str, a)], capture_output=True, text=True, env=env, timeout=300
    )
    out = tmp_path / "bench.json"
    tiny = ("--sizes", "20x16x4", "--scaling", "", "--methods", "trilinear", "--in-process")
    result = run(*tiny, "--json", out)
    assert result.returncode == 0, result.stderr
    assert "trilinear" in result.stdout and json.loads(out.read_text())["results"][0]["size"] == "20x16x4"
    bad = run("--sizes", "20x16", "--in-process")
    assert bad.returncode == 2 and bad.stderr.startswith("cycleinr: error:")
    assert bad.stderr.count("\n") == 1
    assert run("--device", "tpu").returncode == 2


def test_sample_path_exists():
    assert benchmark.sample_path().is_file()
