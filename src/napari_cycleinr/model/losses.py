"""Training losses: an L1 fit to the thin slices plus the cycle-consistent loss (CCL).

CCL: the prediction, degraded back onto the acquired slice positions by the very operator that made the
input, must reproduce the input. Averaging ties every new slice to what was measured, which counters the
over-smoothed synthetic slices that show as horizontal lines in coronal views.
"""

from __future__ import annotations

import torch


def fit_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction - target).abs().mean()


def cycle_loss(prediction: torch.Tensor, thick: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
    """prediction (..., n_thin) along its last axis, thick (..., n_thick), degradation (n_thick, n_thin)."""
    return (prediction @ degradation.to(prediction.dtype).T - thick).abs().mean()
