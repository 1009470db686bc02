"""The scan's own noise texture on every new slice (`--texture`, the widget's *noise texture*): a look, not
accuracy.

Why: a super-resolved slice is the estimate with the least error, so every thin slice inside an acquired slab
shares that slab's measurement and its noise, and the output changes at the slab borders: faint lines at the
acquired slice period in coronal and sagittal views, and slices smoother than a real thin scan's
(docs/method.md, "Lines at the slab period"). Adding to every output slice its own draw of noise with the
scan's in-plane noise spectrum makes neighbouring slices differ inside a slab as they do across a border.
Measured on held-out CT at x5 (docs/results.md, "Noise texture"): the lines fall from 1.38 to 1.14 for 0.2 dB
of PSNR. Noise is never information, so it is off by default.

How much: strength 1 brings each output slice to the noise a slice acquired at the output spacing would carry
if the acquired slices were averages of independent thin slices (the acquired noise times
1 / sqrt(sum of the profile's squared weights)); real thin CT slices share some noise along z and carry less.
The noise is measured where the tissue is flat (patches in the body with the least anatomy, detrended), its
spectrum shaped by a PATCH x PATCH filter, and drawn per output slice from a fixed seed, so a run repeats.

numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage, signal

from napari_cycleinr.model.metrics import body_threshold  # numpy only: no torch
from napari_cycleinr.options import check_texture
from napari_cycleinr.slice_profile import profile_weights

PATCH = 32
"""Side of the square patches the noise is measured on, and of the filter that shapes it."""
SAMPLED_SLICES = 24
"""Slices the noise is measured on (evenly spread): enough patches, a bounded cost."""

_Y, _X = np.mgrid[0:PATCH, 0:PATCH] / PATCH - 0.5
_TREND = np.stack([np.ones_like(_Y), _Y, _X, _Y * _Y, _X * _X, _Y * _X], axis=-1).reshape(-1, 6)
_TREND_PINV = np.linalg.pinv(_TREND)


@dataclass(frozen=True)
class NoiseSpectrum:
    level: float
    """Standard deviation of the noise in flat tissue, in the scan's units."""
    kernel: np.ndarray
    """PATCH x PATCH filter: white noise of variance 1 through it has this spectrum and variance 1."""
    patches: int


@dataclass(frozen=True)
class TextureReport:
    strength: float
    acquired: float
    """The input's noise level (scan units)."""
    before: float
    """The output's noise level before (scan units)."""
    added: float
    """Standard deviation of the noise added to every output slice."""

    def summary(self) -> str:
        return (f"noise texture: added {self.added:.3g} of the scan's own noise spectrum to every new slice "
                f"(strength {self.strength:g}; acquired slices {self.acquired:.3g}, output before {self.before:.3g})")

    def to_record(self) -> dict[str, float]:
        return {"strength": self.strength, "acquired_noise": round(self.acquired, 4),
                "output_noise_before": round(self.before, 4), "added_noise": round(self.added, 4)}


def _flat_patches(planes: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Detrended PATCH x PATCH patches fully inside the body, the quarter with the least anatomy (the smoothed
    image's gradient, which noise hardly moves)."""
    scored = []
    for plane in planes:
        plane = np.asarray(plane, dtype=np.float32)
        smooth = ndimage.gaussian_filter(plane, 2.0)
        gradient = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
        inside = plane > threshold
        h, w = plane.shape
        for y in range(0, h - PATCH + 1, PATCH // 2):
            for x in range(0, w - PATCH + 1, PATCH // 2):
                if inside[y : y + PATCH, x : x + PATCH].all():
                    scored.append((float(gradient[y : y + PATCH, x : x + PATCH].mean()), plane[y : y + PATCH, x : x + PATCH]))
    scored.sort(key=lambda item: item[0])
    kept = scored[: max(8, len(scored) // 4)] if len(scored) >= 8 else []
    return [_detrend(patch) for _, patch in kept]


def _detrend(patch: np.ndarray) -> np.ndarray:
    values = patch.reshape(-1).astype(np.float64)
    return (values - _TREND @ (_TREND_PINV @ values)).reshape(PATCH, PATCH)


def _sampled(data: np.ndarray) -> np.ndarray:
    step = max(1, data.shape[0] // SAMPLED_SLICES)
    return np.asarray(data[::step][:SAMPLED_SLICES])


def measure_noise(data: np.ndarray, threshold: float) -> NoiseSpectrum | None:
    """The in-plane noise of a (z, y, x) volume in flat tissue; None when it has no flat tissue to measure."""
    patches = _flat_patches(_sampled(data), threshold)
    if not patches:
        return None
    power = np.mean([np.abs(np.fft.fft2(p)) ** 2 for p in patches], axis=0) / PATCH**2
    level = float(np.sqrt(power.mean()))  # Parseval: the mean power is the variance
    if not (math.isfinite(level) and level > 0):
        return None
    unit = power / power.mean()
    kernel = np.fft.fftshift(np.real(np.fft.ifft2(np.sqrt(unit))))
    return NoiseSpectrum(level, kernel.astype(np.float32), len(patches))


def noise_gain(factor: float, profile: str, thickness: float) -> float:
    """How much noisier than an acquired slice a slice acquired at the output spacing would be, if the
    acquired slices were the profile's weighted sums of independent thin slices (1 for gaps: each acquired
    slice is already a thin one)."""
    if profile == "skip":
        return 1.0
    n_thin = max(int(math.ceil(factor * 8)), 8)
    weights = profile_weights(n_thin, factor, profile, thickness * factor)
    return float(1.0 / math.sqrt(float(np.mean((weights**2).sum(axis=1)))))


def add_texture(
    data: np.ndarray,
    acquired: NoiseSpectrum,
    *,
    strength: float,
    gain: float,
    threshold: float,
    seed: int = 0,
    cancel: Callable[[], None] | None = None,
) -> TextureReport:
    """Add the noise, in place, slice by slice (a memory-mapped output stays on disk); integer outputs are
    rounded and clipped. Only inside the body (holes filled, so the lungs too), feathered at its outline."""
    check_texture(strength)
    before = measure_noise(data, threshold)
    before_level = before.level if before is not None else 0.0
    target = acquired.level * gain
    added = strength * math.sqrt(max(0.0, target**2 - before_level**2))
    report = TextureReport(strength, acquired.level, before_level, added)
    if added <= 0:
        return report
    limits = np.iinfo(data.dtype) if np.issubdtype(data.dtype, np.integer) else None
    for k in range(data.shape[0]):
        if cancel is not None:
            cancel()
        plane = np.asarray(data[k], dtype=np.float32)
        body = ndimage.binary_fill_holes(plane > threshold)
        if not body.any():
            continue
        rng = np.random.default_rng([seed, k])
        white = rng.standard_normal(plane.shape, dtype=np.float32)
        noise = signal.fftconvolve(white, acquired.kernel, mode="same")
        plane += np.float32(added) * noise * ndimage.gaussian_filter(body.astype(np.float32), 1.5)
        if limits is not None:
            plane = np.clip(np.rint(plane), limits.min, limits.max)
        data[k] = plane.astype(data.dtype, copy=False)
    return report


def body_level(data: np.ndarray, modality: str) -> float:
    """The body threshold of a volume (metrics.body_threshold), from its sampled slices."""
    return body_threshold(_sampled(data), modality)
