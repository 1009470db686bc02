"""The coronal zoom of docs/results.md, "Lines at the slab period": the lines before and after the weights were
fine-tuned against them.

    git show 4874dfb:src/napari_cycleinr/weights/average.safetensors > runs/before/average.safetensors
    python scripts/make_banding_figure.py [--before runs/before/average.safetensors] [--data ../shared/data]
        [--out docs/results/banding_coronal.png]

Held-out LIDC-IDRI-0002 (never trained on), thin slices 60-219, slab-averaged at x5 (6.25 mm) and brought
back to 1.25 mm: the thick input, tricubic, CycleINR before (the `average` weights of commit 4874dfb) and now
(the bundled `average`), and the real thin scan; a zoom on one coronal plane through the heart and the
mediastinum, soft-tissue window (W 400, L 40), true aspect ratio, each voxel a block of pixels. Banding
(docs/metrics.md) and PSNR in each title.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from napari_cycleinr.io import read_volume  # noqa: E402
from napari_cycleinr.model.checkpoint import load_model  # noqa: E402
from napari_cycleinr.model.evaluate import metric_window, simulate_thick  # noqa: E402
from napari_cycleinr.model.infer import predict  # noqa: E402
from napari_cycleinr.model.metrics import banding, psnr  # noqa: E402

FACTOR = 5
WINDOW = (-160.0, 240.0)
ROW = 120
Z_RANGE = slice(20, 120)
X_RANGE = slice(64, 192)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="runs/before/average.safetensors")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="docs/results/banding_coronal.png")
    args = parser.parse_args()
    volume = read_volume(Path(args.data) / "train/ct_lidc0002_chest_1p25mm.nii.gz")
    _, h, w = volume.shape
    y0, x0 = (h - 256) // 2, (w - 256) // 2
    volume = volume.replace(data=np.ascontiguousarray(volume.data[60:220, y0 : y0 + 256, x0 : x0 + 256]))
    thick, reference, positions, intensities = simulate_thick(volume, FACTOR, "average", "CT")
    hu = intensities.denormalise

    def ours(weights: str) -> np.ndarray:
        return hu(predict("cycleinr", thick, positions, 1 / FACTOR, model=load_model(weights)))

    panels = {
        "input (6.25 mm)": np.repeat(hu(thick), FACTOR, axis=0)[: len(reference)],
        "tricubic": hu(predict("tricubic", thick, positions, 1 / FACTOR)),
        "CycleINR before": ours(args.before),
        "CycleINR now": ours("average"),
        "real 1.25 mm scan": reference,
    }
    window = metric_window(reference, "CT")
    row = ROW  # a coronal plane: fixed y (front to back), z down, x across
    aspect = volume.spacing[0] / volume.spacing[1]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.4))
    for axis, (title, data) in zip(axes, panels.items()):
        score = "" if title.startswith("input") else f"\nbanding {banding(data, FACTOR):.2f}"
        if not title.startswith(("input", "real")):
            score += f", {psnr(reference, data, window):.2f} dB"
        axis.imshow(data[Z_RANGE, row, X_RANGE], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], aspect=aspect,
                    interpolation="nearest")
        axis.set_title(title + score, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
