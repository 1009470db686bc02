"""Exact data consistency: correct a super-resolved volume so that, degraded back onto the acquired slice
positions, it reproduces the input.

With W the degradation matrix (n_in, n_out) of the output grid, y the input and x the output (one z column
per pixel), the step is a projection onto {x : W x = y}:

    x' = x + C W^T (W C W^T + eps I)^-1 (y - W x)

C = I is the orthogonal projection, the smallest change; any volume that really produced the input lies in
the set, so it never moves away from one when the slice profile is right. But under a slab average it adds
one constant per slab, a step at every slab border: the very lines at the slab period the model was trained
not to draw. So for slab averages and Gaussian profiles C is a Gaussian along z (`correction_spread`), and the
correction is smooth; skipped slices keep C = I, which touches only the acquired slices (docs/method.md,
"Exact data consistency"). Columns are independent, so the step runs over in-plane tiles and works on
memory-mapped outputs of any size.

With smoothing > 0 only the in-plane low frequencies of the residual y - W x (a Gaussian of that many pixels)
are corrected. The residual's fine grain is mostly the thick slices' own noise; spread over each slab by the
exact step it comes back as slab-to-slab jumps of the noise level, the horizontal lines SNLI measures
(docs/method.md, "Exact data consistency").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import ndimage

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.intensity import cast_like
from napari_cycleinr.model.degrade import degradation_matrix
from napari_cycleinr.options import MAX_SMOOTHING, check_slice_profile, check_smoothing  # noqa: F401 - re-exported
from napari_cycleinr.runtime.blocks import CancelCheck, raise_if_cancelled
from napari_cycleinr.slice_profile import RIDGE
from napari_cycleinr.volume import Volume


@dataclass(frozen=True)
class Residual:
    """How far the degraded output is from the input, in the volume's own units (HU for CT)."""

    rms: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {"rms": round(self.rms, 4), "max": round(self.max, 4)}


@dataclass(frozen=True)
class ConsistencyReport:
    profile: str
    thickness: float
    """Slice thickness over slice spacing of the input (1: contiguous slices)."""
    before: Residual
    after: Residual
    smoothing: float = 0.0
    """In-plane Gaussian sigma (pixels) of the part of the residual that was corrected; 0: all of it."""
    spread: float = 0.0
    """Gaussian sigma (output slices) over which the correction is spread along z; 0: the orthogonal step."""

    def as_dict(self) -> dict:
        return {
            "profile": self.profile,
            "thickness_over_spacing": self.thickness,
            "smoothing_pixels": self.smoothing,
            "z_spread_slices": round(self.spread, 4),
            "residual_before": self.before.as_dict(),
            "residual_after": self.after.as_dict(),
        }

    def summary(self) -> str:
        part = f", in-plane sigma {self.smoothing:g} px" if self.smoothing else ""
        return (
            f"data consistency ({self.profile} profile{part}): residual RMS {self.before.rms:.3g} -> "
            f"{self.after.rms:.3g}, max {self.before.max:.3g} -> {self.after.max:.3g}"
        )


@dataclass(frozen=True)
class ConsistencyOptions:
    """The step as a folder run asks for it: the scan's slice profile, and how much of the residual to correct."""

    profile: str = "average"
    thickness: float = 1.0
    """Slice thickness over slice spacing (1: contiguous slices)."""
    smoothing: float = 0.0
    """In-plane Gaussian sigma (pixels) of the residual that is corrected; 0: all of it (the exact step)."""

    def __post_init__(self) -> None:
        check_slice_profile(self.profile, self.thickness)
        check_smoothing(self.smoothing)


def output_degradation(n_in: int, n_out: int, profile: str = "average", thickness: float = 1.0) -> torch.Tensor:
    """W (n_in, n_out), float64: how the acquired slices arise from the output grid's slices."""
    check_slice_profile(profile, thickness)
    ratio = n_out / n_in
    return degradation_matrix(n_out, ratio, profile, thickness=thickness * ratio, n_thick=n_in)


SPREAD = 0.5
"""Sigma of the correction's spread along z, in acquired slice spacings. Half a slab kept the orthogonal step's
PSNR gain within 0.01 dB (mean of 8 cases) and most of the model's evenness; one slab gave up 0.02-0.03 dB of
it, two 0.14-0.19 dB (docs/results.md, "Exact data consistency without lines")."""


def correction_spread(profile: str, ratio: float) -> float:
    """Sigma (output slices) of the z spread of the consistency correction: none for skipped slices, whose
    orthogonal step changes only the acquired slices and was the better one there."""
    return 0.0 if profile == "skip" else SPREAD * ratio


def enforce_consistency(
    output: np.ndarray,
    acquired: np.ndarray,
    profile: str = "average",
    thickness: float = 1.0,
    tile: int = 64,
    cancel: CancelCheck | None = None,
    progress: Callable[[int, int], None] | None = None,
    smoothing: float = 0.0,
) -> ConsistencyReport:
    """Project `output` (n_out, H, W) in place onto the volumes that degrade to `acquired` (n_in, H, W).

    Integer outputs are rounded and clipped after the correction, which leaves a residual of the order of
    the rounding step (with smoothing, also the residual's fine grain, left alone on purpose). Returns the
    residual before and after.
    """
    check_smoothing(smoothing)
    n_out, n_in = output.shape[0], acquired.shape[0]
    if output.shape[1:] != acquired.shape[1:] or n_out <= n_in:
        raise CycleINRError(f"output {output.shape} is not a z-super-resolution of input {acquired.shape}")
    w = output_degradation(n_in, n_out, profile, thickness)
    spread = correction_spread(profile, n_out / n_in)
    before, after = project(output, acquired, w, tile, cancel, progress, smoothing, spread)
    return ConsistencyReport(profile, float(thickness), before, after, float(smoothing), spread)


def project(
    output: np.ndarray,
    acquired: np.ndarray,
    w: torch.Tensor,
    tile: int = 64,
    cancel: CancelCheck | None = None,
    progress: Callable[[int, int], None] | None = None,
    smoothing: float = 0.0,
    spread: float = 0.0,
) -> tuple[Residual, Residual]:
    """The projection for any degradation matrix w (n_in, n_out), tile by tile; residuals before and after.

    spread: the sigma (output slices) of the Gaussian prior C along z; the correction is C W^T (W C W^T)^-1 r.

    smoothing: correct only the residual blurred in-plane by a Gaussian of that sigma (pixels); each tile
    reads a halo of rows so that the result equals blurring the whole residual at once, and a corrected tile
    is written only once no later tile's halo reads its rows.
    """
    w = w.to(torch.float64)
    half = _blur_z(w, spread / math.sqrt(2))  # W H, with C = H H^T: a Gram matrix, positive definite as it must be
    gram = half @ half.T
    lift = _blur_z(half, spread / math.sqrt(2))  # W C
    gram += RIDGE * float(torch.linalg.eigvalsh(gram).max()) * torch.eye(w.shape[0], dtype=gram.dtype)
    factor = torch.linalg.cholesky(gram)
    halo = _blur_radius(smoothing)
    height = output.shape[1]
    before, after = _Accumulator(), _Accumulator()
    rows = range(0, height, tile)
    pending: list[tuple[slice, np.ndarray]] = []
    for done, y0 in enumerate(rows, start=1):
        raise_if_cancelled(cancel)
        block = slice(y0, min(y0 + tile, height))
        x = _column_block(output, block)
        y = _column_block(acquired, block)
        residual = y - _degrade(w, x)
        before.add(residual)
        if smoothing:
            wide = slice(max(0, y0 - halo), min(block.stop + halo, height))
            around = _column_block(acquired, wide) - _degrade(w, _column_block(output, wide))
            blurred = ndimage.gaussian_filter(around.numpy(), (0, smoothing, smoothing), mode="reflect")
            residual = torch.from_numpy(blurred[:, y0 - wide.start : block.stop - wide.start])
        correction = torch.cholesky_solve(residual.reshape(w.shape[0], -1), factor).reshape(residual.shape)
        final = cast_like((x + torch.einsum("io,ihw->ohw", lift, correction)).numpy(), output.dtype)
        pending.append((block, final))
        next_halo_start = block.stop - halo
        while pending and pending[0][0].stop <= next_halo_start:
            done_block, values = pending.pop(0)
            output[:, done_block] = values
        after.add(y - _degrade(w, _column_block(final, slice(None))))
        if progress is not None:
            progress(done, len(rows))
    for done_block, values in pending:
        output[:, done_block] = values
    return before.result(), after.result()


def _blur_z(w: torch.Tensor, sigma: float) -> torch.Tensor:
    """w H for the symmetric Gaussian H (zero beyond the volume's ends) along the output slices."""
    return torch.from_numpy(ndimage.gaussian_filter1d(w.numpy(), sigma, axis=1, mode="constant")) if sigma else w


def _blur_radius(sigma: float) -> int:
    """Rows either side that scipy's Gaussian reads (its default truncation at 4 sigma)."""
    return int(4.0 * sigma + 0.5) if sigma else 0


def consistency_residual(
    output: np.ndarray, acquired: np.ndarray, profile: str = "average", thickness: float = 1.0, tile: int = 64
) -> Residual:
    """The residual alone, without changing anything (for reports and tests)."""
    w = output_degradation(acquired.shape[0], output.shape[0], profile, thickness)
    total = _Accumulator()
    for y0 in range(0, output.shape[1], tile):
        block = slice(y0, y0 + tile)
        total.add(_column_block(acquired, block) - _degrade(w, _column_block(output, block)))
    return total.result()


def _column_block(volume: np.ndarray, rows: slice) -> torch.Tensor:
    return torch.from_numpy(np.asarray(volume[:, rows], dtype=np.float64))


def _degrade(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("io,ohw->ihw", w, x)


class _Accumulator:
    def __init__(self) -> None:
        self.squares, self.count, self.max = 0.0, 0, 0.0

    def add(self, residual: torch.Tensor) -> None:
        self.squares += float(residual.pow(2).sum())
        self.count += residual.numel()
        self.max = max(self.max, float(residual.abs().max()))

    def result(self) -> Residual:
        return Residual(float(np.sqrt(self.squares / max(self.count, 1))), self.max)


def make_consistent(
    result: Volume,
    source: Volume,
    profile: str = "average",
    thickness: float = 1.0,
    cancel: CancelCheck | None = None,
    smoothing: float = 0.0,
) -> ConsistencyReport:
    """enforce_consistency on a super-resolved Volume (in place), recorded in its super_resolution metadata."""
    report = enforce_consistency(result.data, source.data, profile, thickness, cancel=cancel, smoothing=smoothing)
    result.metadata.setdefault("super_resolution", {})["data_consistency"] = report.as_dict()
    return report
