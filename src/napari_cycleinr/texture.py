"""The scan's own noise texture on every new slice (`--texture`, the widget's *noise texture*): a look, not
accuracy.

Why: a super-resolved slice is an estimate, and every thin slice inside an acquired slab shares that slab's
measurement and its noise: the slices are smoother than a real thin scan's, and without the banding loss the
output changed at the slab borders (docs/method.md, "Lines at the slab period"). Adding to every output slice
its own draw of noise with the scan's in-plane noise spectrum gives each slice its own grain, inside a slab as
across a border. Noise is never information, so it is off by default.

How much: strength 1 gives every output slice its own draw of as much noise as an acquired slice carries,
added to what the slice has (which is mostly its slab's noise, shared with its neighbours); 2 twice that. A
real thin CT slice carries about 1.5 times the noise of a 4-5 slice average (held-out LIDC: 12.5 against 8.2
HU), not the sqrt(4-5) of independent noise. The noise is measured where the tissue is flat (patches in the
body with the least anatomy, detrended), its spectrum shaped by a patch-sized filter, and drawn per output
slice from a fixed seed, so a run repeats. It costs little PSNR where the model's error is large against the
noise (CT) and much where it is not (MR): docs/results.md, "Noise texture".

Where: the job draws it where the acquisition cannot see it (`unseen`, the degradation W of the output grid:
W noise = 0), a sample of what the slabs do not say. The output then degrades back onto the input exactly as
before (the cycle's promise kept), and the draws inside a slab are anticorrelated, so neighbouring slices
differ inside a slab a little more than across its border, against the model's lines.

numpy and scipy only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage, signal

from napari_cycleinr.model.metrics import body_threshold  # numpy only: no torch
from napari_cycleinr.options import check_texture
from napari_cycleinr.slice_profile import RIDGE

PATCH = 32
"""Side of the square patches the noise is measured on, and of the filter that shapes it (16, on a finer grid,
on images narrower than 128 pixels, so small scans have patches inside the body)."""
MIN_PATCHES = 4
"""Fewer flat patches than this in the sampled slices: the noise is not measured (and the job says so)."""
SAMPLED_SLICES = 24
"""Slices the noise is measured on (evenly spread): enough patches, a bounded cost."""


@functools.cache
def _trend(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A quadratic surface basis over a size x size patch, and its pseudo-inverse."""
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    basis = np.stack([np.ones_like(y), y, x, y * y, x * x, y * x], axis=-1).reshape(-1, 6)
    return basis, np.linalg.pinv(basis)


@dataclass(frozen=True)
class NoiseSpectrum:
    level: float
    """Standard deviation of the noise in flat tissue, in the scan's units."""
    kernel: np.ndarray
    """A patch-sized filter: white noise of variance 1 through it has this spectrum and variance 1."""
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
    """Detrended square patches fully inside the body: the quarter with the least anatomy (the smoothed
    image's gradient, which noise hardly moves), less any whose variance still shows structure (above twice
    the median)."""
    small = min(planes.shape[1:]) < 4 * PATCH
    size, step = (PATCH // 2, PATCH // 8) if small else (PATCH, PATCH // 2)
    scored = []
    for plane in planes:
        plane = np.asarray(plane, dtype=np.float32)
        smooth = ndimage.gaussian_filter(plane, 2.0)
        gradient = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
        inside = plane > threshold
        h, w = plane.shape
        for y in range(0, h - size + 1, step):
            for x in range(0, w - size + 1, step):
                window = (slice(y, y + size), slice(x, x + size))
                if inside[window].all():
                    scored.append((float(gradient[window].mean()), plane[window]))
    if len(scored) < MIN_PATCHES:
        return []
    scored.sort(key=lambda item: item[0])
    patches = [_detrend(patch) for _, patch in scored[: max(MIN_PATCHES, len(scored) // 4)]]
    variances = np.array([p.var() for p in patches])
    return [p for p, v in zip(patches, variances) if v <= 2.0 * np.median(variances)]


def _detrend(patch: np.ndarray) -> np.ndarray:
    basis, inverse = _trend(patch.shape[0])
    values = patch.reshape(-1).astype(np.float64)
    return (values - basis @ (inverse @ values)).reshape(patch.shape)


def _sampled(data: np.ndarray) -> np.ndarray:
    step = max(1, data.shape[0] // SAMPLED_SLICES)
    return np.asarray(data[::step][:SAMPLED_SLICES])


def measure_noise(data: np.ndarray, threshold: float) -> NoiseSpectrum | None:
    """The in-plane noise of a (z, y, x) volume in flat tissue; None when it has no flat tissue to measure."""
    patches = _flat_patches(_sampled(data), threshold)
    if not patches:
        return None
    power = np.mean([np.abs(np.fft.fft2(p)) ** 2 for p in patches], axis=0) / patches[0].size
    level = float(np.sqrt(power.mean()))  # Parseval: the mean power is the variance
    if not (math.isfinite(level) and level > 0):
        return None
    unit = power / power.mean()
    kernel = np.fft.fftshift(np.real(np.fft.ifft2(np.sqrt(unit))))
    return NoiseSpectrum(level, kernel.astype(np.float32), len(patches))


def add_texture(
    data: np.ndarray,
    acquired: NoiseSpectrum,
    *,
    strength: float,
    threshold: float,
    seed: int = 0,
    cancel: Callable[[], None] | None = None,
    unseen: np.ndarray | None = None,
) -> TextureReport:
    """Add the noise, in place, slice by slice (a memory-mapped output stays on disk); integer outputs are
    rounded and clipped. Only inside the body (holes filled, so the lungs too), feathered at its outline.

    unseen: the degradation W (n_in, n_out) from the output's slices to the acquired ones. The noise is then
    drawn where the acquisition cannot see it (W noise = 0, as a sample of what the slabs do not say would
    be): the output still degrades back onto the input as before, and inside a slab the noise is
    anticorrelated, so neighbouring slices differ inside a slab a little more than across its borders. Rescaled
    to keep its level; it may then reach a slice's air next to where its slab-mates have body. Holds one
    input-sized float32 array (what the acquired slices would see)."""
    check_texture(strength)
    before = measure_noise(data, threshold)
    before_level = before.level if before is not None else 0.0
    added = strength * acquired.level
    report = TextureReport(strength, acquired.level, before_level, added)
    if added <= 0:
        return report
    seen = None if unseen is None else _seen(data, acquired.kernel, threshold, seed, unseen, cancel)
    scale = 1.0 if unseen is None else math.sqrt(unseen.shape[1] / max(unseen.shape[1] - unseen.shape[0], 1))
    limits = np.iinfo(data.dtype) if np.issubdtype(data.dtype, np.integer) else None
    for k in range(data.shape[0]):
        if cancel is not None:
            cancel()
        plane = np.asarray(data[k], dtype=np.float32)
        noise = _slice_noise(plane, k, acquired.kernel, threshold, seed)
        if seen is not None:
            rows = np.flatnonzero(unseen[:, k])
            noise = noise - np.tensordot(unseen[rows, k].astype(np.float32), seen[rows], axes=1)
        if not noise.any():
            continue
        plane += np.float32(added * scale) * noise
        if limits is not None:
            plane = np.clip(np.rint(plane), limits.min, limits.max)
        data[k] = plane.astype(data.dtype, copy=False)
    return report


def _slice_noise(plane: np.ndarray, k: int, kernel: np.ndarray, threshold: float, seed: int) -> np.ndarray:
    """Output slice k's own draw (a fixed seed: the same every time), shaped and kept to the body."""
    body = ndimage.binary_fill_holes(plane > threshold)
    if not body.any():
        return np.zeros(plane.shape, np.float32)
    white = np.random.default_rng([seed, k]).standard_normal(plane.shape, dtype=np.float32)
    noise = signal.fftconvolve(white, kernel, mode="same")
    return (noise * ndimage.gaussian_filter(body.astype(np.float32), 1.5)).astype(np.float32)


def _seen(data, kernel, threshold, seed, w: np.ndarray, cancel) -> np.ndarray:
    """(W W^T)^-1 W noise, (n_in, H, W): the part of the noise the acquired slices would see, in their terms.
    One pass over the output slices; the noise is drawn again when it is added (same seed)."""
    seen = np.zeros((w.shape[0], *data.shape[1:]), np.float32)
    for k in range(data.shape[0]):
        if cancel is not None:
            cancel()
        rows = np.flatnonzero(w[:, k])
        if rows.size:
            noise = _slice_noise(np.asarray(data[k], dtype=np.float32), k, kernel, threshold, seed)
            seen[rows] += w[rows, k, None, None].astype(np.float32) * noise
    gram = w @ w.T
    gram += RIDGE * float(np.linalg.eigvalsh(gram).max()) * np.eye(len(gram))
    return np.tensordot(np.linalg.inv(gram).astype(np.float32), seen, axes=1)


def body_level(data: np.ndarray, modality: str) -> float:
    """The body threshold of a volume (metrics.body_threshold), from its sampled slices."""
    return body_threshold(_sampled(data), modality)
