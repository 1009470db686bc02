"""Thick-slice simulation along z, as one linear operator shared by training, the cycle loss and evaluation.

A thick slice is a weighted sum of thin slices, so the whole degradation is a small matrix W of shape
(n_thick, n_thin) applied along z. Using one matrix everywhere guarantees that the cycle-consistent loss
degrades the prediction exactly the way the training input was made.

Geometry (cell-centred): with `ratio` = thick spacing / thin spacing, thick slice i is centred at thin index
(i + 0.5) * ratio - 0.5, so n_thick thick slices cover exactly n_thick * ratio thin slices.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.slice_profile import FWHM_PER_SIGMA, profile_weights  # noqa: F401 - re-exported
from napari_cycleinr.options import MAX_THICKNESS, PROFILES, check_slice_profile  # noqa: F401 - re-exported

KINDS = PROFILES


def degradation_matrix(
    n_thin: int,
    ratio: float,
    kind: str = "average",
    thickness: float | None = None,
    n_thick: int | None = None,
) -> torch.Tensor:
    """Weights (n_thick, n_thin), rows summing to 1, float64.

    ratio: thick spacing in thin-slice units (any real > 0). thickness: slice thickness in thin-slice units
    (default: the spacing, i.e. contiguous slices); for "gaussian" it is the profile's FWHM.
    "skip" samples the thin stack at the thick centres (linear interpolation, a delta profile).
    """
    if kind not in KINDS:
        raise CycleINRError(f"unknown degradation {kind!r}; choose one of {', '.join(KINDS)}")
    if not (math.isfinite(ratio) and ratio > 0):
        raise CycleINRError(f"degradation ratio must be positive, got {ratio}")
    thickness = ratio if thickness is None else float(thickness)
    if n_thick is None:
        n_thick = int(math.floor(n_thin / ratio + 1e-9))
    if n_thick < 1:
        raise CycleINRError(f"{n_thin} thin slices are too few for a ratio of {ratio:g}")
    weights = torch.from_numpy(profile_weights(n_thin, ratio, kind, thickness, n_thick))
    if not torch.all(torch.isfinite(weights)) or torch.any(weights.sum(dim=1) < 0.5):
        raise CycleINRError("the degradation profile misses the thin stack entirely")
    return weights


def apply_along_z(matrix: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
    """Apply (n_out, n_in) weights along the third-from-last axis of (..., n_in, H, W)."""
    return torch.einsum("oi,...ihw->...ohw", matrix.to(volume.dtype), volume)


def degrade(
    volume: np.ndarray | torch.Tensor,
    ratio: float,
    kind: str = "average",
    thickness: float | None = None,
    n_thick: int | None = None,
) -> np.ndarray | torch.Tensor:
    """Thick-slice version of a (..., z, y, x) array or tensor; returns the same kind it was given."""
    as_numpy = isinstance(volume, np.ndarray)
    tensor = torch.from_numpy(np.asarray(volume, dtype=np.float32)) if as_numpy else volume
    matrix = degradation_matrix(tensor.shape[-3], ratio, kind, thickness, n_thick).to(tensor.device)
    result = apply_along_z(matrix, tensor)
    return result.numpy() if as_numpy else result
