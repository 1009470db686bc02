"""Image-quality metrics. PSNR and SSIM compare with a reference in a stated window; SNLI needs none.

Formulas and windows are documented in docs/metrics.md. Everything here is numpy/scipy: metrics never
depend on the model.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CT_WINDOW = (-1024.0, 3071.0)
CT_BODY_HU = -500.0


def _window(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    return np.clip(np.asarray(values, dtype=np.float64), *window)


def psnr(reference: np.ndarray, test: np.ndarray, window: tuple[float, float] = CT_WINDOW) -> float:
    """PSNR in dB with both volumes clipped to `window` and the window's width as the peak."""
    return error_summary(reference, test, window)["psnr"]


def error_summary(
    reference: np.ndarray, test: np.ndarray, window: tuple[float, float] = CT_WINDOW, slices: int = 16
) -> dict[str, float]:
    """PSNR (dB) and mean absolute error (the volume's units) with both clipped to `window`, a few slices at a
    time, so that a whole scan costs a slab's worth of float64 copies rather than two scans' worth."""
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} and {test.shape}")
    squares = absolute = 0.0
    for z0 in range(0, reference.shape[0], slices):
        difference = _window(reference[z0 : z0 + slices], window) - _window(test[z0 : z0 + slices], window)
        squares += float(np.sum(difference * difference))
        absolute += float(np.sum(np.abs(difference)))
    count = max(reference.size, 1)
    mse, peak = squares / count, window[1] - window[0]
    value = float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))
    return {"psnr": value, "mean_abs_error": absolute / count}


def ssim(reference: np.ndarray, test: np.ndarray, window: tuple[float, float] = CT_WINDOW, sigma: float = 1.5) -> float:
    """Mean 3D SSIM (Gaussian window, sigma in voxels; K1 = 0.01, K2 = 0.03) on window-clipped volumes."""
    peak = window[1] - window[0]
    x = (_window(reference, window) - window[0]) / peak
    y = (_window(test, window) - window[0]) / peak
    blur = lambda v: ndimage.gaussian_filter(v, sigma, truncate=3.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(np.mean(index))


def body_threshold(volume: np.ndarray, modality: str) -> float:
    """CT: tissue above -500 HU. MR: a tenth of the 99th percentile (background is near zero)."""
    if modality.upper() == "CT":
        return CT_BODY_HU
    return 0.1 * float(np.percentile(volume, 99))


def slice_noise_levels(volume: np.ndarray, threshold: float, min_pixels: int = 64) -> np.ndarray:
    """Robust noise level of each z slice: 1.4826 * MAD of the in-plane Laplacian inside the body.

    NaN for slices with too little body. The Laplacian removes smooth anatomy and keeps texture and noise.
    """
    sigmas = np.full(volume.shape[0], np.nan)
    for i, plane in enumerate(np.asarray(volume, dtype=np.float32)):
        laplacian = ndimage.laplace(plane)
        body = ndimage.binary_erosion(plane > threshold, iterations=2)
        values = laplacian[body]
        if values.size >= min_pixels:
            sigmas[i] = 1.4826 * np.median(np.abs(values - np.median(values)))
    return sigmas


def snli_parts(volume: np.ndarray, modality: str = "CT", threshold: float | None = None) -> tuple[float, float]:
    """(mean |sigma_i - sigma_{i+1}| over adjacent slices, mean sigma): SNLI's numerator and denominator.

    Apart, they tell whether a high SNLI comes from large jumps or from a low noise level (docs/metrics.md).
    NaN for both when no two adjacent slices have enough body.
    """
    threshold = body_threshold(volume, modality) if threshold is None else threshold
    sigmas = slice_noise_levels(volume, threshold)
    jumps = np.abs(np.diff(sigmas))
    valid = np.isfinite(jumps)
    if not valid.any():
        return float("nan"), float("nan")
    return float(np.mean(jumps[valid])), float(np.nanmean(sigmas))


def snli(volume: np.ndarray, modality: str = "CT", threshold: float | None = None) -> float:
    """Slice-wise noise level inconsistency: mean |sigma_i - sigma_{i+1}| / mean sigma, over adjacent slices.

    Acquired slices alternating with smoother synthetic ones make it large; a real thin scan keeps it small.
    """
    jump, level = snli_parts(volume, modality, threshold)
    return jump / level


def slab_border_pairs(n_out: int, factor: float) -> np.ndarray:
    """For each pair of neighbouring output slices (k, k+1): whether they lie in different acquired slabs.

    Cell-centred grids: output slice k is centred at (k + 0.5) / factor input cells from the volume's start,
    and acquired slab i covers cells [i, i + 1).
    """
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) / float(factor)
    slab = np.floor(centres + 1e-9)
    return slab[1:] != slab[:-1]


PAIR_CLASSES = (
    "across a border", "inside, near a border", "inside, around the centre", "beyond the end centres",
)


def slab_pair_classes(n_out: int, factor: float, n_slabs: int | None = None) -> np.ndarray:
    """For each pair of neighbouring output slices, where it lies in the acquired slab pattern (PAIR_CLASSES):
    0 across a slab border; 1 inside a slab, within a quarter slab of a border; 2 inside, around the acquired
    centre; 3 inside the first or last half slab, beyond the outermost acquired centres, where every method
    extrapolates. A real thin scan changes as much in each; interpolation changes least in 2 and 3."""
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) / float(factor)
    n_slabs = int(np.floor(n_out / float(factor) + 1e-9)) if n_slabs is None else n_slabs
    middle = (centres[1:] + centres[:-1]) / 2.0
    phase = middle - np.floor(middle)  # 0 at a border, 0.5 at an acquired centre
    classes = np.where(np.abs(phase - 0.5) < 0.25, 2, 1)
    classes[(middle < 0.5) | (middle > n_slabs - 0.5)] = 3
    classes[slab_border_pairs(n_out, factor)] = 0
    return classes


def neighbour_differences(volume: np.ndarray, threshold: float) -> np.ndarray:
    """d_k: mean |v[k+1] - v[k]| over the voxels where both slices are inside the body (NaN where none are)."""
    out = np.full(max(volume.shape[0] - 1, 0), np.nan)
    for k in range(len(out)):
        a = np.asarray(volume[k], dtype=np.float32)
        b = np.asarray(volume[k + 1], dtype=np.float32)
        body = (a > threshold) & (b > threshold)
        if np.count_nonzero(body) >= 64:
            out[k] = float(np.mean(np.abs(b[body] - a[body])))
    return out


def banding(volume: np.ndarray, factor: float, modality: str = "CT", threshold: float | None = None,
            pairs: np.ndarray | None = None) -> float:
    """Slab-period banding: mean neighbouring-slice difference across acquired slab borders over the mean
    inside slabs (docs/metrics.md). About 1.0 for a real thin scan; horizontal lines at the acquired slice
    period push it up. NaN when the factor leaves no pair inside a slab (factor < 2) or the body is empty.
    `pairs` (bool, one per neighbouring pair) limits it to some pairs, e.g. away from the volume's ends.
    """
    threshold = body_threshold(volume, modality) if threshold is None else threshold
    differences = neighbour_differences(volume, threshold)
    border = slab_border_pairs(volume.shape[0], factor)
    valid = np.isfinite(differences) if pairs is None else np.isfinite(differences) & pairs
    across, inside = differences[valid & border], differences[valid & ~border]
    if across.size == 0 or inside.size == 0:
        return float("nan")
    inside_mean = float(np.mean(inside))
    return float(np.mean(across)) / inside_mean if inside_mean > 0 else float("inf")
