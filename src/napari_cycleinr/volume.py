"""A volume and its geometry, kept together so that no step can drop the spacing or the affine.

Canonical layout: `data` is (z, y, x) with z the through-plane axis (the one that is super-resolved).
`affine` maps a canonical voxel index (z, y, x, 1) to world millimetres (RAS+ for NIfTI). The file's own
axis order is kept in `file_axes`, so a writer can put the array back exactly as it was read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_cycleinr.errors import CycleINRError


@dataclass(frozen=True, eq=False)
class Volume:
    data: np.ndarray
    """Voxel values, shape (z, y, x), z the through-plane axis."""
    affine: np.ndarray
    """4x4 matrix: canonical index (z, y, x, 1) -> world mm."""
    file_axes: tuple[int, int, int] = (0, 1, 2)
    """Canonical axis a is file axis file_axes[a]: data == np.transpose(file_array, file_axes)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Source path, format, header fields, modality: whatever a writer needs to restore the file."""

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise CycleINRError(f"a volume needs 3 dimensions (z, y, x), got shape {self.data.shape}")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise CycleINRError("the volume's affine must be a finite 4x4 matrix")
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "file_axes", tuple(int(a) for a in self.file_axes))
        spacing = self.spacing
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            said = ", ".join(f"{s:.6g}" for s in spacing)
            raise CycleINRError(f"voxel spacing must be positive, got ({said}) mm")

    @classmethod
    def from_spacing(
        cls,
        data: np.ndarray,
        spacing: tuple[float, float, float],
        origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
        **kwargs: Any,
    ) -> Volume:
        """A volume with an axis-aligned affine; spacing and origin are given in (z, y, x) order.

        World axes follow NIfTI's (x, y, z) order, so canonical x maps to world x and z to world z.
        """
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise CycleINRError(f"voxel spacing must be three positive numbers, got {spacing}")
        affine = np.zeros((4, 4))
        for canonical_axis in range(3):
            world_axis = 2 - canonical_axis
            affine[world_axis, canonical_axis] = spacing[canonical_axis]
            affine[world_axis, 3] = origin[canonical_axis]
        affine[3, 3] = 1.0
        return cls(np.asarray(data), affine, **kwargs)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (z, y, x), read off the affine so it can never disagree with it."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def origin(self) -> np.ndarray:
        """World position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    def replace(self, **changes: Any) -> Volume:
        """A copy with some fields changed; metadata is copied, never shared."""
        changes.setdefault("metadata", dict(self.metadata))
        return replace(self, **changes)


def resampled_z_affine(affine: np.ndarray, z_ratio: float) -> np.ndarray:
    """Affine of a cell-centred z grid whose slices are z_ratio times the old spacing.

    New slice k has its centre at old index (k + 0.5) * z_ratio - 0.5, so both grids cover the same extent.
    """
    m = np.eye(4)
    m[0, 0] = z_ratio
    m[0, 3] = 0.5 * z_ratio - 0.5
    return np.asarray(affine, dtype=np.float64) @ m
