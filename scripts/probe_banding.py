"""Where the lines at the acquired slab period come from (docs/method.md, "Lines at the slab period").

    python scripts/probe_banding.py [--data ../shared/data] [--model average] [--out docs/results/banding.json]

On a held-out crop of LIDC-IDRI-0002 (central 128 x 128, thin slices 60-159), slab-averaged at x4 and x5:
banding and PSNR of the thin scan, the interpolations, the model, the model smoothed along z (plainly, or keeping each slab's
mean) or averaged over each output cell, the best linear estimate from neighbouring slabs fitted on the reference itself (an
oracle), and the in-plane texture (noise level, power spectrum) against the thin scan.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.consistency import output_degradation
from napari_cycleinr.model.evaluate import simulate_thick
from napari_cycleinr.model.infer import predict
from napari_cycleinr.model.metrics import banding, neighbour_differences, psnr, slice_noise_levels

SCAN = "train/ct_lidc0002_chest_1p25mm.nii.gz"
BANDS = ((0.05, 0.15), (0.15, 0.3), (0.3, 0.5))


def held_out_crop(data: Path, size: int = 128):
    volume = read_volume(data / SCAN)
    _, h, w = volume.shape
    y0, x0 = (h - size) // 2, (w - size) // 2
    return volume.replace(data=np.ascontiguousarray(volume.data[60:160, y0 : y0 + size, x0 : x0 + size]))


def oracle_linear(thick: np.ndarray, reference: np.ndarray, factor: int, each_side: int) -> np.ndarray:
    """Per position in the slab, the least-squares linear estimate from 2 * each_side + 1 slabs (and a
    constant), fitted on the reference itself."""
    out = np.empty_like(reference)
    n = len(thick)
    for phase in range(factor):
        rows = np.arange(phase, len(reference), factor)
        slabs = rows // factor
        columns = [thick[np.clip(slabs + j, 0, n - 1)].reshape(len(rows), -1) for j in range(-each_side, each_side + 1)]
        design = np.stack([*columns, np.ones_like(columns[0])], axis=-1).reshape(-1, len(columns) + 1)
        coefficients, *_ = np.linalg.lstsq(design, reference[rows].reshape(-1), rcond=None)
        out[rows] = (design @ coefficients).reshape(len(rows), *reference.shape[1:])
    return out


def mean_keeping_smoothing(output: np.ndarray, n_in: int, sigma: float) -> np.ndarray:
    """z-smoothed, then corrected (with a correction as smooth as the smoothing) so that its slab averages
    equal the output's own: the input is still reproduced, only the steps at the borders are spread."""
    n_out = len(output)
    w = output_degradation(n_in, n_out, "average", 1.0).double().numpy()
    smooth = ndimage.gaussian_filter1d(np.eye(n_out), sigma, axis=0, mode="nearest")
    correction = smooth @ w.T @ np.linalg.inv(w @ smooth @ w.T)
    operator = smooth + correction @ (w - w @ smooth)
    return (operator @ output.reshape(n_out, -1).astype(np.float64)).reshape(output.shape).astype(np.float32)


def texture(volume: np.ndarray) -> dict:
    size = volume.shape[-1]
    radius = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    spectrum = np.mean([np.abs(np.fft.fft2(s - s.mean())) ** 2 for s in volume], axis=0)
    return {"noise_level": float(np.nanmean(slice_noise_levels(volume, -500.0))),
            "power": [float(spectrum[(radius >= a) & (radius < b)].mean()) for a, b in BANDS]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--model", default="average")
    parser.add_argument("--out", default="docs/results/banding.json")
    args = parser.parse_args()
    crop, model = held_out_crop(Path(args.data)), load_model(args.model)
    rows = []
    for factor in (4, 5):
        thick, reference, positions, intensities = simulate_thick(crop, factor, "average", "CT")
        hu = intensities.denormalise

        def row(name: str, volume: np.ndarray) -> None:
            differences = neighbour_differences(volume, -500.0)
            phase = np.arange(len(differences)) % factor
            rows.append({"factor": factor, "method": name, "banding": banding(volume, factor),
                         "psnr": psnr(reference, volume) if name != "thin reference" else None,
                         "differences_by_position_HU": [float(np.nanmean(differences[phase == p])) for p in range(factor)],
                         **texture(volume)})
            print({k: v for k, v in rows[-1].items() if k not in ("power",)}, flush=True)

        row("thin reference", reference)
        for method in ("trilinear", "tricubic"):
            row(method, hu(predict(method, thick, positions, 1 / factor)))
        output = hu(predict("cycleinr", thick, positions, 1 / factor, model=model))
        row("cycleinr", output)
        for sigma in (0.6, 1.0):
            row(f"cycleinr, z-smoothed sigma {sigma}", ndimage.gaussian_filter1d(output, sigma, axis=0, mode="nearest"))
        for sigma in (1.0, 1.5):
            row(f"cycleinr, z-smoothed sigma {sigma} keeping the slab means", mean_keeping_smoothing(output, len(thick), sigma))
        offsets = (np.arange(4) + 0.5) / 4 - 0.5
        cell = sum(hu(predict("cycleinr", thick, positions + o / factor, 1 / factor, model=model)) for o in offsets) / 4
        row("cycleinr, averaged over each output cell", cell)
        smoothed_input = ndimage.gaussian_filter(thick, (0, 1.5, 1.5))
        row("cycleinr on an in-plane smoothed input", hu(predict("cycleinr", smoothed_input, positions, 1 / factor, model=model)))
        for side in (1, 2, 3):
            row(f"oracle linear, {2 * side + 1} slabs", oracle_linear(hu(thick), reference, factor, side))
    Path(args.out).write_text(json.dumps({"scan": SCAN, "crop": "central 128 x 128, thin slices 60-159", "rows": rows},
                                         indent=1, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
