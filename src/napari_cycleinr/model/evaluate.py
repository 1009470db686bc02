"""Evaluation on thin references: simulate thick slices, super-resolve with each method, score against the
reference. Every method answers on exactly the thin reference's slice positions, so no resampling of the
reference is involved.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.intensity import guess_modality, intensity_map
from napari_cycleinr.model.consistency import correction_spread, project
from napari_cycleinr.model.degrade import degradation_matrix, degrade
from napari_cycleinr.model.infer import check_volume, predict
from napari_cycleinr.model.metrics import CT_WINDOW, banding, error_summary, psnr, snli, ssim
from napari_cycleinr.volume import Volume

BASELINES = ("trilinear", "tricubic")
AUTO = "auto"
"""The method that takes the weights `upsample` would take with no profile given: the scan's slice profile
found from the simulated thick volume (which, like a NIfTI, records none), else the fallback weights."""


def simulate_thick(volume: Volume, factor: float, degradation: str, modality: str | None = None):
    """(thick normalised, reference in original units, positions, intensity map) for a thin reference."""
    check_volume(volume)  # a NaN in the reference would score every method NaN, silently
    n = volume.shape[0]
    n_thick = int(math.floor(n / factor + 1e-9))
    if n_thick < 2:
        raise CycleINRError(f"{n} slices are too few to simulate x{factor:g} thick slices (need {math.ceil(2 * factor)})")
    length = int(math.floor(n_thick * factor + 1e-9))  # thin slices fully inside the thick extent
    intensities = intensity_map(volume.data, modality)
    thin = intensities.normalise(volume.data)
    thick = degrade(thin, factor, degradation, n_thick=n_thick)
    positions = (np.arange(length) + 0.5) / factor - 0.5
    return thick, volume.data[:length].astype(np.float32), positions, intensities


def metric_window(reference: np.ndarray, modality: str) -> tuple[float, float]:
    """CT: the full HU range; MR: the reference's 0.5-99.5 percentile range."""
    if modality == "CT":
        return CT_WINDOW
    low, high = np.percentile(reference, (0.5, 99.5))
    return float(low), float(high)


def evaluate_volume(
    volume: Volume,
    factor: float,
    degradation: str,
    models: dict[str, Any],
    methods: list[str],
    modality: str | None = None,
    device: Any = None,
    keep_outputs: bool = False,
    consistency: bool = False,
    ensemble: bool = False,
    choose: Callable[[Volume, float], tuple[Any, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Scores of each method on one reference. `models` maps method names to CycleINR modules.

    The method AUTO asks `choose` for the model (and a record of why) given the simulated thick volume, with
    the thick spacing and no record of its slice profile, and the factor: what a user's NIfTI of that scan
    would get.

    consistency adds a "<model>+dc" row per model: its output after the exact data-consistency step with
    the degradation that made the thick slices (the slice profile a real scan would need to be told).
    ensemble adds a "<model>+ens" row per model: the mean with its answer on the input reversed along z
    (what `upsample --ensemble` writes), and with consistency a "<model>+ens+dc" row."""
    if not (math.isfinite(factor) and factor > 1):
        raise CycleINRError(f"the factor must be above 1, got {factor}")
    thick, reference, positions, intensities = simulate_thick(volume, factor, degradation, modality)
    window = metric_window(reference, intensities.modality)
    result: dict[str, Any] = {
        "reference": str(volume.metadata.get("source_path", "in-memory volume")),
        "factor": factor,
        "degradation": degradation,
        "modality": intensities.modality,
        "window": list(window),
        "reference_snli": snli(reference, intensities.modality),
        "reference_banding": _finite(banding(reference, factor, intensities.modality)),
        "methods": {},
    }
    if AUTO in methods:
        if choose is None:
            raise CycleINRError("the method auto needs a way to choose the weights (choose=)")
        stretch = np.diag([factor, 1.0, 1.0, 1.0])
        chosen_model, result[AUTO] = choose(volume.replace(
            data=intensities.denormalise(thick), affine=volume.affine @ stretch,
            metadata={k: v for k, v in volume.metadata.items() if k not in ("slice_thickness_mm", "slice_spacing_mm")},
        ), factor)
        models = {**models, AUTO: chosen_model}
    outputs = {}
    for method in methods:
        rows = _method_rows(method, thick, positions, factor, degradation, models, device, consistency, ensemble)
        for name, (values, seconds) in rows.items():
            output = intensities.denormalise(values)
            result["methods"][name] = {
                "psnr": psnr(reference, output, window),
                "ssim": ssim(reference, output, window),
                "snli": snli(output, intensities.modality),
                "banding": _finite(banding(output, factor, intensities.modality)),
                "seconds": round(seconds, 3),
            }
            if keep_outputs:
                outputs[name] = output
    if keep_outputs:
        result["outputs"] = outputs
        result["reference_array"] = reference
    return result


def _method_rows(
    method: str,
    thick: np.ndarray,
    positions: np.ndarray,
    factor: float,
    degradation: str,
    models: dict[str, Any],
    device: Any,
    consistency: bool,
    ensemble: bool,
) -> dict[str, tuple[np.ndarray, float]]:
    """One method's normalised outputs and seconds: its own row, and its +ens and +dc variants if asked."""
    started = time.perf_counter()
    if method in BASELINES:
        normalised = predict(method, thick, positions, 1.0 / factor)
    elif method in models:
        normalised = predict("cycleinr", thick, positions, 1.0 / factor, model=models[method], device=device)
    else:
        raise CycleINRError(f"unknown method {method!r}: not a baseline and no model was given for it")
    rows = {method: (normalised, time.perf_counter() - started)}
    if ensemble and method not in BASELINES:
        started = time.perf_counter()
        mirrored = predict(
            "cycleinr", thick, positions, 1.0 / factor, mirrored=True, model=models[method], device=device
        )
        rows[f"{method}+ens"] = ((normalised + mirrored) / 2, rows[method][1] + time.perf_counter() - started)
    if consistency and method not in BASELINES:
        operator = degradation_matrix(len(positions), factor, degradation, n_thick=thick.shape[0])
        for name, (values, seconds) in list(rows.items()):
            started = time.perf_counter()
            corrected = values.copy()
            project(corrected, thick, operator, spread=correction_spread(degradation, factor))
            rows[f"{name}+dc"] = (corrected, seconds + time.perf_counter() - started)
    return rows


def _finite(value: float) -> float | None:
    """None, not NaN: scores are written as JSON and metadata."""
    return value if math.isfinite(value) else None


def reference_scores(
    reference: np.ndarray, output: np.ndarray, modality: str | None = None, factor: float | None = None
) -> dict[str, Any]:
    """A super-resolved volume against a real thin scan on its grid (the widget's error layer, `upsample
    --reference`): PSNR and mean absolute error in the window the report uses (CT: the full HU range; MR:
    the reference's 0.5-99.5 percentiles), the SNLI of both volumes and, given the factor, their banding at
    the acquired slab period."""
    modality = modality or guess_modality(np.asarray(reference))  # as intensity_map guesses it
    window = metric_window(reference, modality)
    scores: dict[str, Any] = {"modality": modality, "window": [float(window[0]), float(window[1])]}
    scores.update(error_summary(reference, output, window))
    for name, volume in (("output", output), ("reference", reference)):
        scores[f"snli_{name}"] = _finite(snli(volume, modality))
        if factor is not None:
            scores[f"banding_{name}"] = _finite(banding(volume, factor, modality))
    return scores


def scores_summary(scores: dict[str, Any]) -> str:
    unit = " HU" if scores["modality"] == "CT" else ""
    low, high = scores["window"]

    def level(value: float | None) -> str:
        return "n/a (too little body)" if value is None else f"{value:.3f}"

    line = (
        f"PSNR {scores['psnr']:.2f} dB, mean |error| {scores['mean_abs_error']:.1f}{unit} (window {low:g} to "
        f"{high:g}{unit}); SNLI {level(scores['snli_output'])}, reference {level(scores['snli_reference'])}"
    )
    if "banding_output" in scores:
        banded = "n/a (factor below 2 or too little body)"
        if scores["banding_output"] is not None and scores["banding_reference"] is not None:
            banded = f"{scores['banding_output']:.2f}, reference {scores['banding_reference']:.2f}"
        line += f"; banding {banded}"
    return line


def _shown(value: float | None) -> str:
    return f"{'n/a':>8}" if value is None else f"{value:>8.3f}"


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'reference':<34} {'x':>5} {'degradation':<9} {'method':<16} {'PSNR dB':>8} {'SSIM':>7} {'SNLI':>7} {'s':>7} {'banding':>8}"]
    for r in results:
        name = Path(r["reference"]).name[:34]
        lines.append(f"{name:<34} {r['factor']:>5g} {r['degradation']:<9} {'(reference)':<16} {'':>8} {'':>7} "
                     f"{r['reference_snli']:>7.3f} {'':>7} {_shown(r.get('reference_banding'))}")
        for method, m in r["methods"].items():
            shown = f"auto: {r[AUTO]['weights']}" if method == AUTO and AUTO in r else method
            lines.append(
                f"{name:<34} {r['factor']:>5g} {r['degradation']:<9} {shown:<16} {m['psnr']:>8.2f} {m['ssim']:>7.4f} "
                f"{m['snli']:>7.3f} {m['seconds']:>7.2f} {_shown(m.get('banding'))}"
            )
    return "\n".join(lines)
