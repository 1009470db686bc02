"""The fallback model's own answer to "which slice profile?": its cycle residual under each profile.

The mixed-profile weights were trained on every profile and cannot be told which one made a scan, so they
answer somewhere between "sharpen each slab" and "interpolate between samples", leaning to what the slices
look like. Degraded back, their output reproduces the input better with the profile they leaned to: the log
ratio of the mean residuals, gaps over slab average, is > 0 for a slab average and < 0 for gaps; on the
slab-average side, that of a Gaussian profile over gaps is < 0 for Gaussian slices and > 0 for slab averages
(docs/method.md, "Which weights: the slice profile, found"). 1-3 s on 2 CPU cores, on a central block.
"""

from __future__ import annotations

import math

import numpy as np

from napari_cycleinr.intensity import intensity_map
from napari_cycleinr.model.degrade import degrade
from napari_cycleinr.model.infer import predict
from napari_cycleinr.slice_profile import NOT_TOLD, CycleCues

CUE_SLICES = 32
CUE_PIXELS = 160


def central_run(data: np.ndarray, slices: int = CUE_SLICES, size: int = CUE_PIXELS) -> np.ndarray:
    """At most `slices` slices from the middle, the central size x size pixels, as float32."""
    n, h, w = data.shape
    z0, y0, x0 = max(0, (n - slices) // 2), max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(data[z0 : z0 + slices, y0 : y0 + size, x0 : x0 + size], dtype=np.float32)


def cycle_cues(data: np.ndarray, factor: float, modality: str, model) -> CycleCues:
    """The model's output at `factor`, degraded back under each profile: the log ratios of the mean residuals;
    NOT_TOLD when the block is too short or flat to tell."""
    block = central_run(data, CUE_SLICES, CUE_PIXELS)
    if block.shape[0] < 4:
        return NOT_TOLD
    thick = intensity_map(block, modality).normalise(block)
    factor = float(min(max(factor, 2.0), 6.0))
    count = math.floor(len(thick) * factor + 1e-9)
    positions = (np.arange(count) + 0.5) / factor - 0.5
    output = predict("cycleinr", thick, positions, 1.0 / factor, model=model)
    residual = {kind: float(np.abs(degrade(output, factor, kind, n_thick=len(thick)) - thick).mean())
                for kind in ("average", "skip", "gaussian")}
    if not all(value > 0 for value in residual.values()):
        return NOT_TOLD
    return CycleCues(math.log(residual["skip"] / residual["average"]),
                     math.log(residual["gaussian"] / residual["skip"]))
