"""Training pairs: random crops of thin-slice scans, degraded on the fly to a random non-integer thickness.

A pair is (thick input, thin target, the degradation matrix that links them, the scale). Crops mostly of
air teach nothing and are re-drawn. Optional self-supervised pairs swap z with an in-plane axis: in-plane
data is sharper than any z axis, so it makes a fine "thin" target even from a thick scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from napari_cycleinr.model.degrade import degradation_matrix

BODY_LEVEL = 0.12  # normalised intensity of about -540 HU: tissue rather than air
MIN_BODY_FRACTION = 0.25


@dataclass
class Pair:
    thick: torch.Tensor  # (B, n_thick, P, P)
    thin: torch.Tensor  # (B, L, P, P)
    degradation: torch.Tensor  # (n_thick, L) float32
    ratio: float
    kind: str


@dataclass
class TrainingVolume:
    data: np.ndarray  # normalised float32 (z, y, x)
    inplane_only: bool = False  # a thick scan: only its in-plane axes may play the role of z


def _views(volume: TrainingVolume, inplane_fraction: float, rng: np.random.Generator) -> np.ndarray:
    use_inplane = volume.inplane_only or rng.random() < inplane_fraction
    if not use_inplane:
        return volume.data
    # y or x becomes z; the real z axis comes first in the plane, so a (short, long) crop fits either view
    return volume.data.transpose((1, 0, 2) if rng.integers(2) else (2, 0, 1))


def _crop(data: np.ndarray, depth: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray | None:
    z, h, w = data.shape
    if z < depth or h < size[0] or w < size[1]:
        return None
    best = None
    for _ in range(20):
        z0, y0, x0 = (int(rng.integers(0, n - m + 1)) for n, m in ((z, depth), (h, size[0]), (w, size[1])))
        crop = data[z0 : z0 + depth, y0 : y0 + size[0], x0 : x0 + size[1]]
        if float(np.mean(crop > BODY_LEVEL)) >= MIN_BODY_FRACTION:
            return crop
        best = crop
    return best


def _augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[:, :, ::-1]
    if rng.random() < 0.5 and crop.shape[1] == crop.shape[2]:
        crop = np.swapaxes(crop, 1, 2)
    if rng.random() < 0.5:
        crop = crop[::-1]
    return np.ascontiguousarray(crop)


def sample_pair(
    volumes: list[TrainingVolume],
    rng: np.random.Generator,
    batch: int,
    thick_slices: int,
    size: int | tuple[int, int],
    scale_range: tuple[float, float],
    kinds: tuple[str, ...],
    inplane_fraction: float = 0.0,
    ratio: float | None = None,
    kind: str | None = None,
    thickness: float = 1.0,
) -> Pair:
    """One batch sharing scale and degradation (so shapes agree); volumes too short for it are skipped.

    size: the in-plane crop, square or (rows, columns); thickness: slice thickness over slice spacing."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    ratio = float(rng.uniform(*scale_range)) if ratio is None else ratio
    kind = str(rng.choice(kinds)) if kind is None else kind
    depth = math.ceil(thick_slices * ratio - 1e-9)
    crops = []
    for _ in range(batch * 50):
        volume = volumes[int(rng.integers(len(volumes)))]
        crop = _crop(_views(volume, inplane_fraction, rng), depth, size, rng)
        if crop is not None:
            crops.append(_augment(crop, rng))
        if len(crops) == batch:
            break
    if len(crops) < batch:
        raise ValueError(f"no training volume holds a {depth}x{size[0]}x{size[1]} crop")
    thin = torch.from_numpy(np.stack(crops))
    matrix = degradation_matrix(depth, ratio, kind, thickness=thickness * ratio, n_thick=thick_slices).float()
    thick = torch.einsum("oi,bihw->bohw", matrix, thin)
    return Pair(thick=thick, thin=thin, degradation=matrix, ratio=ratio, kind=kind)
