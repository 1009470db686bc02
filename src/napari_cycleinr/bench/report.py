"""`cycleinr benchmark`'s figures: the scaling verdicts, the report as text, and its command-line values."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cycleinr.errors import CycleINRError

LINEAR_R2 = 0.98
"""A time series counts as linear in the number of slices when a straight line explains this much of it."""
FLAT_MB = 64.0
FLAT_SHARE = 0.25
"""Working memory counts as flat when the straight line through its peaks grows over the scaling series by at
most FLAT_MB, or by at most FLAT_SHARE of what the output itself grew by (an inference that held the scan
would grow by more than its output). A fitted line rather than max - min, because the peaks of the C heap
vary by tens of MB from run to run even when the live tensors are constant."""


def size_label(shape: tuple[int, int, int]) -> str:
    """(slices, rows, columns) -> '256x256x60', the way peers quote sizes."""
    return f"{shape[2]}x{shape[1]}x{shape[0]}"


def scaling_summary(
    slices: list[int], seconds: list[float], memory_mb: list[float], output_mb: list[float] | None = None
) -> dict[str, Any]:
    """Does time grow linearly with the number of slices, and does working memory stay flat?"""
    x, y = np.asarray(slices, dtype=float), np.asarray(seconds, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise CycleINRError("the scaling series needs at least two different slice counts")
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.sum((y - (slope * x + intercept)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else 1.0
    spread = float(np.ptp(memory_mb))
    memory_slope = float(np.polyfit(x, np.asarray(memory_mb, dtype=float), 1)[0])
    memory_growth = memory_slope * float(np.ptp(x))
    output_growth = float(np.ptp(output_mb)) if output_mb else 0.0
    return {
        "seconds_per_input_slice": round(float(slope), 4),
        "intercept_seconds": round(float(intercept), 3),
        "r2": round(r2, 4),
        "linear": bool(r2 >= LINEAR_R2 and slope > 0),
        "memory_spread_mb": round(spread, 1),
        "memory_growth_mb": round(memory_growth, 1),
        "output_growth_mb": round(output_growth, 1),
        "flat_memory": bool(memory_growth <= max(FLAT_MB, FLAT_SHARE * output_growth)),
    }


def case_line(result: dict[str, Any], prefix: str = "") -> str:
    label = f"{prefix} " if prefix else ""
    return (
        f"{label}{result['method']} {result['size']} x{result['factor']:g}: {result['seconds']:.2f} s, "
        f"{result['voxels_per_second'] / 1e6:.2f} Mvoxel/s, peak RSS {result['peak_rss_mb']:.0f} MB"
        + (f", {result['precision']}" if result.get("precision", "float32") != "float32" else "")
    )


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_report(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"napari-cycleinr {report['version']} benchmark, x{report['factor']:g} along z"
        + ("" if report.get("isolated", True) else " (in one process)"),
        f"machine: {machine['cpu']}, {machine['cores_available']} cores available, torch {machine['torch']}"
        + (", native bf16" if machine.get("cpu_native_bf16") else "")
        + (f", GPU {machine['gpu']}" if "gpu" in machine else ""),
        f"load average at start {machine['load_average_start'][0]:.2f}, "
        f"cores busy with other work {machine['cores_busy_elsewhere_start']:.2f}"
        + (f"; at end {machine['load_average_end'][0]:.2f}" if "load_average_end" in machine else ""),
        "",
        f"{'input (x*y*z)':<14} {'method':<10} {'device':<7} {'threads':>7} {'seconds':>9} {'Mvoxel/s':>9} "
        f"{'peak RSS MB':>11} {'+RSS MB':>8} {'CUDA MB':>8}  precision",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['size']:<14} {r['method']:<10} {r['device']:<7} {r['threads'] or '-':>7} "
            f"{r['seconds']:>9.2f} "
            f"{r['voxels_per_second'] / 1e6:>9.2f} {r['peak_rss_mb']:>11.0f} {r['rss_increase_mb']:>8.0f} "
            f"{_mb(r['peak_cuda_mb']):>8}  {r.get('precision', 'float32')}"
        )
    for size, ratio in report.get("cycleinr_over_tricubic", {}).items():
        lines.append(f"CycleINR / tricubic time at {size}: {ratio:.2f}")
    scaling = report.get("scaling")
    if scaling:
        rows, cols = scaling["in_plane"]
        lines += [
            "",
            f"scaling, CycleINR on {cols}x{rows} (input and output memory-mapped):",
            f"{'slices':>8} {'seconds':>9} {'s/slice':>8} {'working MB':>11} {'peak RSS MB':>11}",
        ]
        for p in scaling["points"]:
            n = p["input_shape"][0]
            lines.append(
                f"{n:>8} {p['seconds']:>9.2f} {p['seconds'] / n:>8.3f} {p['working_memory_mb']:>11.0f} "
                f"{p['peak_rss_mb']:>11.0f}"
            )
        lines.append(
            f"time: {scaling['seconds_per_input_slice']:.3f} s per input slice "
            f"+ {scaling['intercept_seconds']:.2f} s, R^2 {scaling['r2']:.3f} "
            f"({'linear' if scaling['linear'] else 'NOT linear'})\nworking memory: fitted growth "
            f"{scaling['memory_growth_mb']:.0f} MB (peaks within {scaling['memory_spread_mb']:.0f} MB) "
            f"while the output grew {scaling['output_growth_mb']:.0f} MB "
            f"({'flat' if scaling['flat_memory'] else 'NOT flat'})"
        )
    return "\n".join(lines)


def parse_sizes(text: str) -> tuple[tuple[int, int, int], ...]:
    """'256x256x60,512x512x60' (x, y, slices, as peers quote them) -> ((60, 256, 256), (60, 512, 512))."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            x, y, z = (int(v) for v in part.lower().split("x"))
        except ValueError:
            message = f"sizes look like 256x256x60 (columns x rows x slices), got {part!r}"
            raise CycleINRError(message) from None
        if min(x, y) < 8 or z < 2:
            raise CycleINRError(f"size {part} is too small: need at least 8x8 pixels and 2 slices")
        sizes.append((z, y, x))
    return tuple(sizes)


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise CycleINRError(f"slice counts look like 30,60,120,240, got {text!r}") from None
    if any(c < 2 for c in counts):
        raise CycleINRError("every scaling slice count must be at least 2")
    return counts


