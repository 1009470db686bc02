"""Training losses: an L1 fit to the thin slices plus the cycle-consistent loss (CCL).

CCL: the prediction, degraded back onto the acquired slice positions by the very operator that made the
input, must reproduce the input. Averaging ties every new slice to what was measured, which counters the
over-smoothed synthetic slices that show as horizontal lines in coronal views.
"""

from __future__ import annotations

import torch


FIT_LOSSES = ("l1", "rmse")


def fit_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """L1 (robust, the default) or the root mean square error (what PSNR measures; the root keeps its scale,
    and so the weights of the other terms, comparable with L1's) between prediction and thin slices."""
    error = prediction - target
    return error.pow(2).mean().add(1e-12).sqrt() if kind == "rmse" else error.abs().mean()


def cycle_loss(prediction: torch.Tensor, thick: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
    """prediction (..., n_thin) along its last axis, thick (..., n_thick), degradation (n_thick, n_thin)."""
    return (prediction @ degradation.to(prediction.dtype).T - thick).abs().mean()


def z_gradient_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the neighbouring-slice differences of prediction and thin slices, along the last axis.

    The fit alone lets a model keep each acquired slab nearly flat and jump at the slab borders (horizontal
    lines at the acquired period, docs/method.md "Lines at the slab period"): the thin target has no jump
    there, so differences that bunch up at borders pay here while the slab averages stay free.
    """
    return (prediction.diff(dim=-1) - target.diff(dim=-1)).abs().mean()


def change_kept(prediction: torch.Tensor, target: torch.Tensor):
    """kept(where): how much of the thin slices' neighbouring-slice change the prediction keeps over the pairs
    `where` selects (mean |prediction difference| / mean |true difference|, along the last axis)."""
    moved, truth = prediction.diff(dim=-1).abs(), target.diff(dim=-1).abs()
    return lambda where: moved[..., where].mean() / truth[..., where].mean().clamp_min(1e-6)


def banding_loss(prediction: torch.Tensor, target: torch.Tensor, border: torch.Tensor) -> torch.Tensor:
    """|log| of how much more of the thin slices' neighbouring-slice change the prediction keeps across the
    acquired slab borders than inside slabs; (..., L) along the last axis, border: bool (L - 1,).

    The loss form of metrics.banding, relative to the truth and scale-free: an output evenly a little smoother
    than the truth pays nothing, one flat inside slabs and steep at their borders (the lines at the slab
    period) pays, whether it cures that by a ramp or by keeping more of what changes inside a slab.
    """
    kept = change_kept(prediction, target)
    return (kept(border) / kept(~border).clamp_min(1e-6)).log().abs()


def even_change_loss(prediction: torch.Tensor, target: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """banding_loss over every place in the slab pattern, not only borders against the rest: mean |log| of how
    much of the thin slices' neighbouring-slice change the prediction keeps in each class of pairs
    (metrics.slab_pair_classes, (L - 1,) ints) against all pairs; (..., L) along the last axis.

    Interpolation keeps least change around the acquired centres (where the slopes on either side of a noisy
    sample cancel) and beyond the outermost centres (where it is flat), which the border/inside ratio mixes
    into "inside"; each class pays for itself here.
    """
    kept = change_kept(prediction, target)
    overall = kept(torch.ones_like(classes, dtype=torch.bool)).clamp_min(1e-6)
    return torch.stack([(kept(classes == c).clamp_min(1e-6) / overall).log().abs()
                        for c in classes.unique().tolist()]).mean()


def slice_texture(window: torch.Tensor) -> torch.Tensor:
    """Texture level of each slice: RMS of the in-plane Laplacian over a (B, h, w, L) window -> (B, L).

    A differentiable stand-in for metrics.slice_noise_levels (which takes a robust MAD inside the body)."""
    laplacian = (
        window[:, :-2, 1:-1] + window[:, 2:, 1:-1] + window[:, 1:-1, :-2] + window[:, 1:-1, 2:] - 4 * window[:, 1:-1, 1:-1]
    )
    return laplacian.pow(2).mean(dim=(1, 2)).add(1e-10).sqrt()


def noise_consistency_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How unevenly the prediction keeps the target's texture from slice to slice; windows (B, h, w, L).

    The ratio of predicted to true texture level should be the same on every slice: a model that is sharp
    at the acquired positions and smooth between them (the SNLI artefact) pays, while one that is evenly a
    little smoother than the truth does not, so the loss never asks for invented noise.
    """
    ratio = slice_texture(prediction) / slice_texture(target).clamp_min(1e-4)
    return (ratio - ratio.mean(dim=1, keepdim=True)).abs().mean()
