"""The coronal zoom of docs/results.md, "Lines at the slab period": the lines before and after the weights were
fine-tuned against them, on the held-out CT and MR.

    git show 4874dfb:src/napari_cycleinr/weights/average.safetensors > runs/before/average.safetensors
    git show 4874dfb:src/napari_cycleinr/weights/average_mr.safetensors > runs/before/average_mr.safetensors
    PYTHONPATH=scripts python scripts/make_banding_figure.py [--before runs/before/average.safetensors]
        [--before-mr runs/before/average_mr.safetensors] [--data ../shared/data] [--out docs/results/banding_coronal.png]

The held-out scans (never trained on) as scripts/probe_texture.py crops them: LIDC-IDRI-0002, thin slices
60-219, and the MEMPRAGE MR in its own geometry, each slab-averaged at x5 (6.25 and 5 mm) and brought back to the
thin spacing: the thick input, tricubic, CycleINR before (the `average` and `average_mr` weights of commit 4874dfb)
and now (the bundled ones), and the real thin scan; a zoom on one plane along z (coronal on the CT), the CT in
a soft-tissue window (W 400, L 40), the MR in its 0.5-99.5 percentile window, true aspect ratio, each voxel a
block of pixels. Banding (docs/metrics.md) and PSNR in each title."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from probe_texture import scans  # noqa: E402

from napari_cycleinr.model.checkpoint import load_model  # noqa: E402
from napari_cycleinr.model.evaluate import metric_window, simulate_thick  # noqa: E402
from napari_cycleinr.model.infer import predict  # noqa: E402
from napari_cycleinr.model.metrics import banding, psnr  # noqa: E402
from napari_cycleinr.texture import body_level  # noqa: E402

FACTOR = 5
CT_WINDOW = (-160.0, 240.0)
ROW = 120
Z_RANGE = slice(20, 120)
X_RANGE = slice(64, 192)
MR_ROW = 80
MR_Z_RANGE = slice(38, 138)
MR_X_RANGE = slice(16, 144)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="runs/before/average.safetensors")
    parser.add_argument("--before-mr", default="runs/before/average_mr.safetensors")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="docs/results/banding_coronal.png")
    args = parser.parse_args()
    held_out = {name: volume for name, _, volume in scans(Path(args.data)) if "held out" in name}
    rows = [
        ("CT", held_out["LIDC-IDRI-0002 (held out)"], args.before, "average", (ROW, Z_RANGE, X_RANGE)),
        ("MR", held_out["MEMPRAGE MR (held out)"], args.before_mr, "average_mr", (MR_ROW, MR_Z_RANGE, MR_X_RANGE)),
    ]
    figure, axes = plt.subplots(len(rows), 5, figsize=(3.2 * 5, 8.0), height_ratios=[1.0, 0.8])
    for axes_row, (modality, volume, before, now, plane) in zip(axes, rows):
        draw_row(axes_row, volume, modality, before, now, plane)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print("wrote", args.out)


def draw_row(axes, volume, modality: str, before: str, now: str, plane: tuple) -> None:
    """One scan slab-averaged at x5 and brought back: input, tricubic, before, now, the real thin scan."""
    thick, reference, positions, intensities = simulate_thick(volume, FACTOR, "average", modality)
    scale = intensities.denormalise

    def ours(weights: str) -> np.ndarray:
        return scale(predict("cycleinr", thick, positions, 1 / FACTOR, model=load_model(weights)))

    thin_mm, thick_mm = volume.spacing[0], volume.spacing[0] * FACTOR
    panels = {
        f"{modality} input ({thick_mm:g} mm)": np.repeat(scale(thick), FACTOR, axis=0)[: len(reference)],
        "tricubic": scale(predict("tricubic", thick, positions, 1 / FACTOR)),
        "CycleINR before": ours(before),
        f"CycleINR now ({now})": ours(now),
        f"real {thin_mm:.3g} mm scan": reference,
    }
    window, body = metric_window(reference, modality), body_level(reference, modality)
    shown = CT_WINDOW if modality == "CT" else window
    row, z_range, x_range = plane  # a plane along z: fixed y, z down, x across
    aspect = volume.spacing[0] / volume.spacing[1]
    for axis, (title, data) in zip(axes, panels.items()):
        score = "" if "input" in title else f"\nbanding {banding(data, FACTOR, modality, body):.2f}"
        if "input" not in title and not title.startswith("real"):
            score += f", {psnr(reference, data, window):.2f} dB"
        axis.imshow(data[z_range, row, x_range], cmap="gray", vmin=shown[0], vmax=shown[1], aspect=aspect,
                    interpolation="nearest")
        axis.set_title(title + score, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])


if __name__ == "__main__":
    main()
