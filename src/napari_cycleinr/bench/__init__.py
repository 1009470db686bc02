"""Measuring the application: `cycleinr benchmark` (harness.py runs the cases through the pipeline, report.py
turns them into figures and text) and the evaluation's plots (plots.py). Outside the torch-only model package
because they time and draw the whole job, not the network."""

from napari_cycleinr.bench.harness import (
    FACTOR,
    METHODS,
    SCALING_SLICES,
    SIZES,
    Case,
    PeakMemory,
    benchmark_volume,
    fit_shape,
    machine_info,
    run_benchmark,
    run_case,
    run_isolated,
    sample_path,
)
from napari_cycleinr.bench.report import format_report, parse_counts, parse_sizes, scaling_summary, size_label

__all__ = [
    "FACTOR", "METHODS", "SCALING_SLICES", "SIZES", "Case", "PeakMemory", "benchmark_volume", "fit_shape",
    "format_report", "machine_info", "parse_counts", "parse_sizes", "run_benchmark", "run_case", "run_isolated",
    "sample_path", "scaling_summary", "size_label",
]
