"""How the thick slices were made, known rather than asked: from the scan's record, else from the image.

The order (docs/method.md, "Which weights: the slice profile, found"): the user's explicit choice always wins; else the DICOM
record (SliceThickness against the measured spacing between slice centres); else an estimate from the image
itself. A NIfTI or TIFF file records no thickness, so for those the image is all there is.

The image estimate uses two cues. (1) The in-plane axes are sharp: degraded along one of them with each
candidate profile at the scan's own slice spacing, they show what the through-plane axis would look like under
that profile. One scale-free statistic, the mean |second difference| over the mean |first difference| of the
sampled lines, orders the profiles (gaps > slab average > Gaussian: a wider profile leaves a smoother signal).
The through-plane value is placed on the span between the Gaussian and the gaps simulations (`position`);
anatomy is not isotropic, so where a scan sits on that span moves with its anatomy, and the class boundaries
were calibrated on synthetic degradations of the training scans (scripts/calibrate_slice_profile.py), never
the validation scans. (2) Slices whose profiles overlap (Gaussian tails, thickness above spacing) share part
of their noise; slab averages and gaps do not (`shared_noise`). That is physics, not anatomy, so it holds from
scan to scan. Only where both cues name a Gaussian profile is the estimate confident enough to pick weights (on
MR, where the noise does and the position does not say gaps: MR_GAUSSIAN_BELOW); slab average against gaps
rests on the first cue alone and stays a hint (IMAGE_CONFIDENCE).

numpy and scipy only: the widget shows the finding before anything loads torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.special import erf

from napari_cycleinr.model.metrics import body_threshold  # numpy only: no torch
from napari_cycleinr.options import PROFILES

PROFILE_NAMES = {"average": "slab average", "gaussian": "Gaussian", "skip": "gaps"}
"""Each profile as the user reads it."""
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

GAPS_BELOW = 0.75
"""Thickness over spacing below which a DICOM series has gaps between its slices (skip profile)."""
OVERLAP_ABOVE = 1.3
"""Thickness over spacing above which slices overlap: a wider, smoother profile (Gaussian weights)."""

GAUSSIAN_BELOW = 0.60
GAPS_ABOVE = 0.88
"""Class boundaries on the estimate's position (0: the Gaussian simulation, 1: the gaps simulation), from
scripts/calibrate_slice_profile.py on synthetic degradations of the training scans (medians 0.41, 0.80 and
0.96 for Gaussian, slab average and gaps; docs/results/slice_profile_estimate.json)."""
IMAGE_CONFIDENCE = 0.45
"""The most the position alone is trusted, below `confident`: the statistic orders the profiles within every
scan, but where the scale sits moves with the anatomy (the bundled sample, a slab average, reads beyond the gaps
boundary). A wrong specialist costs up to 3 dB and the mixed-profile weights a few tenths, so slab average
against gaps is never acted on; a Gaussian profile is, when the shared noise agrees (SHARED_NOISE_ABOVE)."""
MR_CONFIDENCE = 0.3
"""On MR the slab average reads close to gaps even where calibrated (held-out MEMPRAGE: each one read as gaps)."""
MR_GAUSSIAN_BELOW = GAPS_ABOVE
"""On MR the position need only not say gaps for the shared noise to name a Gaussian profile: MR positions
scatter (Gaussian cases read 0.37-0.65 on the training MR, past GAUSSIAN_BELOW at x5, and 0.69-0.72 on the
held-out one at x4 and x5), while no MR slab average or gap shared more than 0.21 of its noise
(docs/results/slice_profile_estimate.json). The position still vetoes the costliest mistake, Gaussian weights
on gaps (below tricubic)."""
SHARED_NOISE_ABOVE = 0.21
"""Shared noise (`shared_noise`) above which neighbouring slices overlap: the midpoint between the Gaussian
and the slab-average medians on synthetic degradations of the training scans (0.30 and 0.12;
scripts/calibrate_slice_profile.py). A Gaussian of FWHM = spacing shares 0.25 in theory, contiguous slabs and
gaps 0; thin slices that themselves overlap add a little to every profile."""
SHARED_NOISE_MARGIN = 0.03
"""Shared noise closer than this to SHARED_NOISE_ABOVE is a guess."""
ESTIMATE_SLICES = 128
"""The estimate reads at most this many slices from the middle of the scan (a bounded cost and memory on a
scan of any length; every calibration scan is shorter)."""
CONFIDENT_SLICES = 16
"""Fewer slices than this never make a confident estimate: 16 (the bundled sample's count) is the shortest scan
the estimate was measured on (docs/results.md, "Finding the slice profile"); shorter ones hold too little
anatomy, and a resampled one shares content between all its slices."""
CONFIDENT_MARGIN = 0.08
"""A position closer than this to a boundary is a guess: the pipeline takes the mixed-profile weights."""

PLAUSIBLE = (-0.5, 2.0)
"""Positions outside this mean the statistic does not separate the profiles on this scan."""

_SIMULATED_GAP = 0.25
"""Thickness over spacing of the gaps candidate (thin slices far apart)."""


@dataclass(frozen=True)
class SliceProfile:
    kind: str
    """average (contiguous slabs), gaussian (a smooth or overlapping profile) or skip (gaps)."""
    thickness: float
    """Slice thickness over slice spacing (for gaussian, the FWHM over the spacing)."""
    source: str
    """'user', 'header' (the DICOM record), 'estimate' (the image) or 'model' (the fallback model's cycle
    residual; options.PROFILE_SOURCES)."""
    confidence: float | None = None
    """0-1 for an estimate; None for a recorded or chosen profile."""
    detail: str = ""
    fallback: str = "the mixed-profile weights"
    """What answers when the profile is not known (an MR gets the weights trained with MR)."""
    position: float | None = None
    """The image estimate's position (0: the Gaussian simulation, 1: the gaps one), where it has one."""

    @property
    def confident(self) -> bool:
        return self.confidence is None or self.confidence >= 0.5

    def describe(self) -> str:
        """One line for the CLI's summary, the widget and the output's metadata."""
        text = f"slice profile: {PROFILE_NAMES[self.kind]}"
        if self.source == "estimate" and not self.confident:
            return (f"slice profile: not known (the image suggests {PROFILE_NAMES[self.kind]}, confidence "
                    f"{self.confidence:.2f}); {self.fallback}")
        if self.source == "estimate":
            why = ": smooth along z, noise shared between slices" if self.kind == "gaussian" else ""
            text += f", estimated from the image{why} (confidence {self.confidence:.2f})"
        elif self.source == "model" and self.confidence == LEANING:
            text += (", estimated: the model's output, degraded back, fits the slices as slab averages about as "
                     f"well as gaps (confidence {self.confidence:.2f})")
        elif self.source == "model":
            fits = {"average": "slab averages", "gaussian": "a Gaussian profile", "skip": "gaps"}[self.kind]
            text += (f", estimated: the model's output, degraded back, fits the slices best as {fits} "
                     f"(confidence {self.confidence:.2f})")
        elif self.source == "header":
            text += f", {self.detail}, from DICOM"
        else:
            text += ", as chosen"
        return text

    def to_record(self) -> dict[str, object]:
        return {"kind": self.kind, "thickness_over_spacing": round(self.thickness, 4), "source": self.source,
                "confidence": None if self.confidence is None else round(self.confidence, 3),
                "description": self.describe(),
                **({"cues": self.detail} if self.source in ("estimate", "model") else {})}


RIDGE = 1e-9
"""Tikhonov term relative to the largest eigenvalue of W W^T, wherever W W^T is solved (exact consistency, the
texture the slabs cannot see): keeps wide overlapping profiles solvable."""


def profile_weights(
    n_thin: int, ratio: float, kind: str = "average", thickness: float | None = None, n_thick: int | None = None
) -> np.ndarray:
    """Thick-slice weights (n_thick, n_thin), rows summing to 1, float64: model/degrade.py's operator.

    ratio: thick spacing in thin-slice units; thickness: slice thickness in thin units (default: the spacing;
    for gaussian the FWHM). Thick slice i is centred at thin index (i + 0.5) * ratio - 0.5. 'skip' samples
    the thin stack at the thick centres (linear interpolation, a delta profile).
    """
    thickness = ratio if thickness is None else float(thickness)
    if n_thick is None:
        n_thick = int(math.floor(n_thin / ratio + 1e-9))
    centres = ((np.arange(n_thick, dtype=np.float64) + 0.5) * ratio - 0.5)[:, None]
    j = np.arange(n_thin, dtype=np.float64)
    lo, hi = j - 0.5, j + 0.5
    if kind == "average":
        half = thickness / 2.0
        weights = np.clip(np.minimum(hi, centres + half) - np.maximum(lo, centres - half), 0.0, None)
    elif kind == "gaussian":
        sigma = max(thickness / FWHM_PER_SIGMA, 1e-6)
        weights = _normal_cdf((hi - centres) / sigma) - _normal_cdf((lo - centres) / sigma)
    else:
        clamped = np.clip(centres, 0.0, n_thin - 1.0)
        weights = np.clip(1.0 - np.abs(j - clamped), 0.0, None)
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def from_record(metadata: dict) -> SliceProfile | None:
    """The profile a DICOM series records: SliceThickness T against the spacing S between slice centres."""
    thickness, spacing = metadata.get("slice_thickness_mm"), metadata.get("slice_spacing_mm")
    try:
        thickness, spacing = float(thickness), float(spacing)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(thickness) and math.isfinite(spacing) and thickness > 0 and spacing > 0):
        return None
    ratio = thickness / spacing
    kind = "skip" if ratio < GAPS_BELOW else "gaussian" if ratio > OVERLAP_ABOVE else "average"
    detail = f"thickness {thickness:.3g} mm / spacing {spacing:.3g} mm"  # 4 mm, not 4.00193 (DICOM rounds)
    return SliceProfile(kind, ratio, "header", None, detail)


def line_statistic(lines: np.ndarray, inside: np.ndarray) -> float:
    """Mean |second difference| over mean |first difference| along the last axis, inside the body."""
    first = np.abs(np.diff(lines, axis=-1))
    second = np.abs(np.diff(lines, 2, axis=-1))
    both = inside[..., 1:] & inside[..., :-1]
    three = both[..., 1:] & both[..., :-1]
    if np.count_nonzero(three) < 256:
        return float("nan")
    return float(second[three].mean() / max(float(first[both].mean()), 1e-12))


def body_mask(data: np.ndarray, modality: str) -> np.ndarray:
    return data > body_threshold(data, modality)


def profile_position(data: np.ndarray, spacing: tuple[float, float, float], modality: str) -> float:
    """Where the through-plane statistic lies between the Gaussian (0) and gaps (1) simulations; NaN when
    the scan is too small or too empty to tell. Measured on the central block, as calibrated."""
    data = central_block(data)
    real = line_statistic(np.moveaxis(data, 0, -1), np.moveaxis(body_mask(data, modality), 0, -1))
    planes = np.asarray(data[:: max(1, data.shape[0] // 24)], dtype=np.float32)
    sigma = _inplane_noise(planes[:: max(1, len(planes) // 8)], modality)
    rng = np.random.default_rng(0)
    simulated = {}
    for kind, width in (("skip", _SIMULATED_GAP), ("gaussian", 1.0)):
        values = []
        for axis, pixel in ((1, spacing[1]), (2, spacing[2])):
            lines = np.moveaxis(planes, axis, -1)
            ratio = spacing[0] / pixel
            if lines.shape[-1] / ratio < 6:
                continue
            matrix = profile_weights(lines.shape[-1], ratio, "average" if kind == "skip" else kind, width * ratio)
            thick = lines @ matrix.T.astype(np.float32)
            # every real voxel keeps the in-plane noise; the simulated profile averaged some of it away
            lost = np.sqrt(np.clip(1.0 - (matrix**2).sum(axis=1), 0.0, None)).astype(np.float32)
            thick += rng.standard_normal(thick.shape, dtype=np.float32) * np.float32(sigma) * lost
            values.append(line_statistic(thick, body_mask(thick, modality)))
        finite = [v for v in values if math.isfinite(v)]
        simulated[kind] = float(np.mean(finite)) if finite else float("nan")
    span = simulated["skip"] - simulated["gaussian"]
    if not (math.isfinite(real) and math.isfinite(span) and span > 1e-3):
        return float("nan")
    return (real - simulated["gaussian"]) / span


def central_block(data: np.ndarray) -> np.ndarray:
    """The central square of at most ESTIMATE_SLICES slices from the middle, as float32."""
    middle = max(0, (data.shape[0] - ESTIMATE_SLICES) // 2)
    return central_square(data[middle : middle + ESTIMATE_SLICES])


def central_square(data: np.ndarray, size: int = 256) -> np.ndarray:
    """The central size x size pixels of every slice, as float32 (the body, and a bounded cost)."""
    _, h, w = data.shape
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(data[:, y0 : y0 + size, x0 : x0 + size], dtype=np.float32)


def _inplane_noise(planes: np.ndarray, modality: str) -> float:
    """Per-pixel noise from the MAD of the in-plane Laplacian inside the body (white noise: variance 20 s^2)."""
    values = []
    for plane in planes:
        inside = ndimage.binary_erosion(body_mask(plane, modality), iterations=2)
        if np.count_nonzero(inside) >= 64:
            values.append(ndimage.laplace(plane)[inside])
    if not values:
        return 0.0
    v = np.concatenate(values)
    return float(1.4826 * np.median(np.abs(v - np.median(v))) / math.sqrt(20.0))


def estimate(data: np.ndarray, spacing: tuple[float, float, float], modality: str) -> SliceProfile:
    """The profile the image suggests, with a confidence; slab average at zero confidence when it cannot tell."""
    data = central_block(data)  # once for both cues (on the block, central_block is a view)
    position = profile_position(data, spacing, modality)
    if not (math.isfinite(position) and PLAUSIBLE[0] <= position <= PLAUSIBLE[1]):
        # too small, too empty or too uniform (a phantom) for the simulations to span the profiles
        return SliceProfile("average", 1.0, "estimate", 0.0, "cannot tell from the image")
    shared = shared_noise(data, modality)
    cap = IMAGE_CONFIDENCE if modality == "CT" else MR_CONFIDENCE
    detail = f"position {position:.2f}, shared noise {shared:.2f}"
    smooth_below = GAUSSIAN_BELOW if modality == "CT" else MR_GAUSSIAN_BELOW
    if position < smooth_below and shared > SHARED_NOISE_ABOVE:
        # both cues: smooth through-plane lines (on MR: not gaps) and noise shared with the neighbours
        confidence = min(1.0, 0.5 * (shared - SHARED_NOISE_ABOVE) / SHARED_NOISE_MARGIN)
        if data.shape[0] < CONFIDENT_SLICES:
            confidence = min(cap, confidence)
        return SliceProfile("gaussian", gaussian_width(shared), "estimate", confidence, detail, position=position)
    if position < GAUSSIAN_BELOW and math.isfinite(shared):
        # smooth lines, but no noise shared: smooth anatomy under contiguous slabs
        margin = min(SHARED_NOISE_ABOVE - shared, GAUSSIAN_BELOW - position)
        return SliceProfile("average", 1.0, "estimate", min(cap, 0.5 * margin / CONFIDENT_MARGIN), detail,
                            position=position)
    if position < GAUSSIAN_BELOW:
        kind, thickness = "gaussian", 1.0
    elif position > GAPS_ABOVE:
        kind, thickness = "skip", _SIMULATED_GAP
    else:
        kind, thickness = "average", 1.0
    margin = min(abs(position - GAUSSIAN_BELOW), abs(position - GAPS_ABOVE))
    return SliceProfile(kind, thickness, "estimate", min(cap, 0.5 * margin / CONFIDENT_MARGIN), detail,
                        position=position)


class CycleCues(NamedTuple):
    """The fallback model's cycle cues (model/cycle_cue.py)."""

    gaps_over_average: float
    """log(mean residual under gaps / under slab average): > 0 where the answer is a slab average's."""
    gaussian_over_gaps: float
    """log(mean residual under a Gaussian profile (FWHM = spacing) / under gaps): < 0 for Gaussian slices."""


NOT_TOLD = CycleCues(float("nan"), float("nan"))

CYCLE_AVERAGE_ABOVE = 0.03
CYCLE_GAPS_BELOW = -0.10
"""Boundaries on the fallback model's cycle cue (model/cycle_cue.py: log of its residual under gaps over that
under slab average, > 0 where its answer is a slab average's). On the training scans every slab average read
0.02 to 0.19 and every gap -0.28 to -1.17, but for a resampled chest CT whose slab averages read -0.22 to
-0.34 (docs/results/gaps_cues.json); between the two boundaries the cue is not trusted."""
LEANING = 0.5
"""The confidence of a CT's slab average between the cue's boundaries: not known, but acted on, because there
the slab-average weights gain more over `mixed` where the slices are slab averages or Gaussian (+0.37 to +0.67
dB on average, 24 of 30 training cases) than they lose where they are gaps (-0.27, 6 of 30; the held-out CT's 5
are slab averages, +0.27); on MR the few cases say nothing, so `mr` keeps them (docs/results/between_zone.json,
scripts/probe_between_zone.py)."""
CYCLE_GAPS_POSITION_ABOVE = 0.80
"""Gaps need the image's position too (above this: not smooth along z), which keeps that resampled CT's slab
averages (positions 0.55-0.71) from being read as gaps; every training gap read above it but one (0.69, x2.5)."""
CYCLE_GAUSSIAN_BELOW = -0.10
"""On the slab-average side, a Gaussian profile where the model's residual under one is this far below that
under gaps (log ratio): no slab average or gap of the held-out scans read below it, whole or in runs of 8
slices, 3 of 96 training CT runs did (the head CT whose slab averages the image reads as Gaussian too); 12 of
36 held-out CT and 8 of 13 MR Gaussian 8-slice runs did (docs/results/gaps_cues.json)."""
CYCLE_SLICES = 4
"""From this many thick slices the cue settles slab average against gaps. On runs of 4 and 6 thick slices,
acting on it gains +0.07 to +0.18 dB on average over the fallback weights on the training scans, +0.08 to +0.24
on the held-out ones, its worst call 0.99 dB under the fallback and well above tricubic
(docs/results/short_runs.json, scripts/probe_short_runs.py)."""
CYCLE_GAUSSIAN_SLICES = 8
"""The Gaussian call needs this many: on runs of 4-6 it named 3 of 144 training CT gaps Gaussian (the head CT
at x2.5, where the Gaussian weights fall under tricubic); such slices get a slab average's weights instead."""


def cycle_cue_applies(found: SliceProfile, slices: int) -> bool:
    """Whether the model's cycle cue may settle this finding: an unsure image estimate of CYCLE_SLICES or more."""
    return not found.confident and found.source == "estimate" and slices >= CYCLE_SLICES


def with_cycle_cue(found: SliceProfile, cue: CycleCues, slices: int, modality: str) -> SliceProfile:
    """The image estimate, settled by the fallback model's cycle cues where the image is not sure: on the
    slab-average side a Gaussian profile when its residual says so, else a slab average; gaps when the cue and
    the position both say so; for a CT between the boundaries, a slab average as likely as not (LEANING);
    unchanged otherwise (docs/method.md, "Which weights: the slice profile, found")."""
    if not cycle_cue_applies(found, slices) or not math.isfinite(cue.gaps_over_average):
        return found
    gaps, gaussian = cue
    said = f"cycle residual gaps / slab average {math.exp(gaps):.2f}"
    if math.isfinite(gaussian):
        said += f", Gaussian / gaps {math.exp(gaussian):.2f}"
    detail = f"{found.detail}, {said}" if found.detail else said
    if gaps > CYCLE_AVERAGE_ABOVE:  # the slab-average side: a slab average, or a Gaussian profile
        if gaussian < CYCLE_GAUSSIAN_BELOW and slices >= CYCLE_GAUSSIAN_SLICES:
            confidence = min(1.0, 0.5 + (CYCLE_GAUSSIAN_BELOW - gaussian) / 0.2)
            return SliceProfile("gaussian", 1.0, "model", confidence, detail, found.fallback, found.position)
        confidence = min(1.0, 0.5 + (gaps - CYCLE_AVERAGE_ABOVE) / 0.2)
        return SliceProfile("average", 1.0, "model", confidence, detail, found.fallback, found.position)
    position = found.position
    if gaps < CYCLE_GAPS_BELOW and position is not None and position > CYCLE_GAPS_POSITION_ABOVE:
        margin = min((CYCLE_GAPS_BELOW - gaps) / 0.2, (position - CYCLE_GAPS_POSITION_ABOVE) / 0.2)
        confidence = min(1.0, 0.5 + margin)
        return SliceProfile("skip", _SIMULATED_GAP, "model", confidence, detail, found.fallback, position)
    if gaps >= CYCLE_GAPS_BELOW and modality == "CT":  # between the boundaries: see LEANING
        return SliceProfile("average", 1.0, "model", LEANING, detail, found.fallback, position)
    return replace(found, detail=detail)


def shared_noise(data: np.ndarray, modality: str) -> float:
    """How much noise neighbouring slices share: the correlation of the in-plane detail of flat tissue between
    neighbouring slices, less that between slices two apart (the share of anatomy that runs on). NaN when the
    scan has too few slices or too little flat tissue. Measured on the central block, as the position is."""
    data = central_block(data)
    if data.shape[0] < 3:
        return float("nan")
    detail = data - ndimage.gaussian_filter(data, (0, 1.0, 1.0))
    smooth = ndimage.gaussian_filter(data, (0, 2.0, 2.0))
    gradient = np.hypot(ndimage.sobel(smooth, 1), ndimage.sobel(smooth, 2))
    body = body_mask(data, modality)
    if np.count_nonzero(body) < 1024:
        return float("nan")
    flat = body & (gradient < np.percentile(gradient[body], 25))
    return _correlation(detail, flat, 1) - _correlation(detail, flat, 2)


def _correlation(values: np.ndarray, mask: np.ndarray, lag: int) -> float:
    both = mask[:-lag] & mask[lag:]
    if np.count_nonzero(both) < 256:
        return float("nan")
    a, b = values[:-lag][both].astype(np.float64), values[lag:][both].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    scale = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / scale) if scale > 0 else float("nan")


def gaussian_width(shared: float) -> float:
    """FWHM over spacing of the Gaussian profile whose neighbours share this much noise: exp(-(S / sigma)^2 / 4)."""
    shared = min(max(shared, 0.05), 0.9)
    return float(FWHM_PER_SIGMA / (2.0 * math.sqrt(-math.log(shared))))


def find_profile(
    data: np.ndarray,
    spacing: tuple[float, float, float],
    modality: str,
    metadata: dict | None = None,
    chosen: str | None = None,
    thickness: float | None = None,
) -> SliceProfile:
    """The user's choice, else the DICOM record, else the image estimate (the module docstring's order)."""
    if chosen is not None:
        return SliceProfile(chosen, 1.0 if thickness is None else float(thickness), "user")
    recorded = from_record(metadata or {})
    if recorded is not None:
        return recorded
    return estimate(data, spacing, modality)
