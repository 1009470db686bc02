"""The words of the job, defined once: methods, slice profiles, devices, bounds and defaults, with their checks.

No torch, no napari: the CLI, the folder runner, the widget (which must open without torch) and the model
package all take their vocabulary and limits from here, so a new method or profile is added in one place.
"""

from __future__ import annotations

import math

from napari_cycleinr.errors import CycleINRError

METHODS = ("cycleinr", "trilinear", "tricubic")
"""cycleinr is the model; trilinear and tricubic are the interpolation baselines."""
MODEL_METHOD = "cycleinr"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32")
"""auto: bfloat16 where the device computes it natively (a GPU; a CPU with AMX or AVX512-BF16: the encoder
only), float32 elsewhere; float32: float32 everywhere, the same numbers on every machine."""
PROFILES = ("average", "gaussian", "skip")
"""Slice profiles: average (a contiguous slab), gaussian (a smooth profile), skip (thin slices with gaps)."""
DEFAULT_PROFILE = "average"
MR_WEIGHTS = "mr"
"""The bundled weights an MR of unknown slice profile gets where a CT gets `mixed`: `mixed` fine-tuned with an
MR among its training scans (docs/results.md, "MR in training")."""
FALLBACK_WEIGHTS = {"CT": "mixed", "MR": MR_WEIGHTS}
"""The bundled weights a scan of unknown slice profile gets, by modality; their cycle residual also settles the
profile where the image cannot (model/cycle_cue.py)."""
MR_PROFILE_WEIGHTS = {"average": "average_mr", "gaussian": "gaussian_mr", "skip": "skip_mr"}
"""The bundled weights an MR of known slice profile gets: the profile's own weights plus what training with MR
added to `mixed` (`mr` - `mixed`; docs/results.md, "MR in training: longer, and the specialists")."""
PROFILE_SOURCES = ("default", "user", "header", "estimate", "model")
"""Where a request's slice profile came from: nobody said (the default), the user, the file's header, an
estimate from the image, or the fallback model's cycle residual (slab average against gaps)."""
TARGET_KINDS = ("spacing", "factor")

MAX_FACTOR = 16.0
"""Factors are in (1, MAX_FACTOR]: beyond that the model extrapolates far outside what it was trained on."""
MAX_THICKNESS = 4.0
"""Slice thickness over slice spacing beyond which a slice profile is not plausible (a typing error)."""
MAX_SMOOTHING = 10.0
"""Pixels: beyond this the consistency step corrects little but the mean, which is not what anyone asks for."""
MAX_TEXTURE = 2.0
"""Noise texture strength, in units of the acquired slices' own noise level (texture.py)."""
ADAPT_MINUTES = 3.0
"""Default time budget of adapting to a scan."""
ADAPT_MINUTES_RANGE = (0.5, 60.0)
"""What the widget offers for the adaptation budget (the API takes anything up to a day)."""
MAX_ADAPT_MINUTES = 24 * 60.0


def check_method(method: str) -> None:
    if method not in METHODS:
        raise CycleINRError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise CycleINRError(f"unknown precision {precision!r}; choose {' or '.join(PRECISIONS)}")


def check_ensemble(method: str, ensemble: bool) -> None:
    if ensemble and method != MODEL_METHOD:
        raise CycleINRError(
            f"the z self-ensemble is for the cycleinr method; {method} gives the same answer on a reversed scan"
        )


def check_factor(factor: float) -> float:
    """A scale factor in (1, MAX_FACTOR], as float."""
    factor = float(factor)
    if not math.isfinite(factor) or factor <= 1.0 or factor > MAX_FACTOR:
        raise CycleINRError(f"the factor must be a number above 1 and at most {MAX_FACTOR:g}, got {factor:g}")
    return factor


def check_spacing(spacing: float) -> float:
    """A target slice spacing in mm (positive), as float; whether it is finer than the input is the grid's
    question."""
    spacing = float(spacing)
    if not (math.isfinite(spacing) and spacing > 0):
        raise CycleINRError(f"the target spacing must be a positive number of mm, got {spacing}")
    return spacing


def check_slice_profile(profile: str, thickness: float) -> None:
    """The slice profile and thickness (over spacing) a user gives for a real scan, checked in one place."""
    if profile not in PROFILES:
        raise CycleINRError(f"unknown slice profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if not (math.isfinite(thickness) and 0 < thickness <= MAX_THICKNESS):
        raise CycleINRError(
            f"slice thickness must be above 0 and at most {MAX_THICKNESS:g} times the spacing, got {thickness:g}"
        )


def check_smoothing(smoothing: float) -> None:
    if not (math.isfinite(smoothing) and 0 <= smoothing <= MAX_SMOOTHING):
        raise CycleINRError(f"the consistency smoothing must be 0 to {MAX_SMOOTHING:g} pixels, got {smoothing:g}")


def check_texture(strength: float) -> None:
    if not (math.isfinite(strength) and 0 <= strength <= MAX_TEXTURE):
        raise CycleINRError(
            f"the noise texture strength must be 0 to {MAX_TEXTURE:g} (times the acquired slices' noise), got {strength:g}"
        )


def check_adapt_budget(minutes: float, steps: int | None) -> None:
    """A time budget (minutes, up to a day) or, when steps is set, a step count of at least 1."""
    if steps is None and not (math.isfinite(minutes) and 0 < minutes <= MAX_ADAPT_MINUTES):
        raise CycleINRError(f"adaptation minutes must be above 0 and at most a day, got {minutes:g}")
    if steps is not None and steps < 1:
        raise CycleINRError(f"adaptation steps must be at least 1, got {steps}")


def check_noise_weight(weight: float) -> None:
    if not (math.isfinite(weight) and weight >= 0):
        raise CycleINRError(f"the noise weight must be 0 or more, got {weight:g}")


def thickness_over_spacing(thickness_mm: float, spacing_mm: float) -> float:
    """A slice thickness in mm (0: the spacing) as the models take it: in units of the slice spacing.
    Its plausibility is checked with the slice profile (check_slice_profile)."""
    return 1.0 if thickness_mm <= 0 else thickness_mm / spacing_mm
