"""The output grid along z: cell-centred, covering exactly the input's physical extent.

Shared by the model, the baselines, the CLI and the widget, so every method answers on the same slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.options import MAX_FACTOR, check_factor, check_spacing

__all__ = ["MAX_FACTOR", "ZGrid", "z_grid"]


@dataclass(frozen=True)
class ZGrid:
    n_in: int
    n_out: int
    spacing_in: float
    spacing_out: float
    """The spacing actually delivered: spacing_in * n_in / n_out (close to what was asked)."""

    @property
    def z_ratio(self) -> float:
        """Output spacing over input spacing (< 1 for super-resolution)."""
        return self.n_in / self.n_out

    @property
    def factor(self) -> float:
        return self.n_out / self.n_in

    def positions(self) -> np.ndarray:
        """Centres of the output slices in input-slice index units (float64)."""
        return (np.arange(self.n_out) + 0.5) * self.z_ratio - 0.5


def z_grid(n_in: int, spacing_in: float, factor: float | None = None, spacing: float | None = None) -> ZGrid:
    """The output grid for a scale factor or a target spacing (exactly one of them).

    N_out = round(N_in * s_in / s_out); the delivered spacing is adjusted so the extent is kept.
    """
    if (factor is None) == (spacing is None):
        raise CycleINRError("give either a factor or a target spacing, not both and not neither")
    if n_in < 2:
        raise CycleINRError(f"super-resolution along z needs at least 2 slices, the volume has {n_in}")
    if not (math.isfinite(spacing_in) and spacing_in > 0):
        raise CycleINRError(f"the input slice spacing must be positive, got {spacing_in} mm")
    if spacing is not None:
        spacing = check_spacing(spacing)
        if spacing >= spacing_in:
            raise CycleINRError(
                f"the target spacing {spacing:g} mm is not finer than the input's {spacing_in:g} mm"
            )
        factor = spacing_in / spacing
        if factor > MAX_FACTOR:
            raise CycleINRError(
                f"the target spacing {spacing:g} mm is more than {MAX_FACTOR:g} times finer than the input's "
                f"{spacing_in:g} mm; choose {spacing_in / MAX_FACTOR:.4g} mm or more"
            )
    factor = check_factor(factor)  # type: ignore[arg-type]
    n_out = max(n_in + 1, int(round(n_in * factor)))
    return ZGrid(n_in=n_in, n_out=n_out, spacing_in=spacing_in, spacing_out=spacing_in * n_in / n_out)


def grid_for(
    n_in: int,
    spacing_in: float,
    grid: ZGrid | None = None,
    factor: float | None = None,
    spacing: float | None = None,
) -> ZGrid:
    """`grid` when one was resolved already (checked against the input it is applied to), else the grid for
    the factor or spacing: the seam through which callers pass a grid down instead of numbers."""
    if grid is None:
        return z_grid(n_in, spacing_in, factor=factor, spacing=spacing)
    if factor is not None or spacing is not None:
        raise CycleINRError("give an output grid, or a factor or a spacing, not both")
    if grid.n_in != n_in or not math.isclose(grid.spacing_in, spacing_in, rel_tol=1e-6):
        raise CycleINRError(
            f"the output grid was made for {grid.n_in} slices of {grid.spacing_in:.4g} mm, "
            f"the volume has {n_in} slices of {spacing_in:.4g} mm"
        )
    return grid
