"""Regenerate docs/results.md, its JSON and its figures with the project's own evaluate command.

    python scripts/make_results.py [--size 256] [--slabs 2]

Needs ../shared/data (the held-back validation scan LIDC-IDRI-0002 and the real 5 mm scan), the bundled
model (stage 4), its earlier training stages 2 (`runs/default_noise`, 4 encoder blocks) and 3
(`runs/default_wide`, 8 blocks), and the ablation study: three runs of 500 steps, identical but for the switch
under test,

    cycleinr train --config configs/default.toml --out runs/ablation500_full --steps 500
    cycleinr train --config configs/ablation_grid.toml --out runs/ablation500_grid --steps 500
    cycleinr train --config configs/ablation_no_cycle.toml --out runs/ablation500_no_cycle --steps 500
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from napari_cycleinr.io import read_volume, write_volume
from napari_cycleinr.model.checkpoint import default_model_path, load_model
from napari_cycleinr.model.evaluate import evaluate_volume
from napari_cycleinr.model.infer import super_resolve

SHARED = Path("../shared/data")
VALIDATION = SHARED / "train/ct_lidc0002_chest_1p25mm.nii.gz"
THICK = SHARED / "thick/ct_pyradiomics_lung1_5mm.nii.gz"
OUT = Path("docs/results")
CROPS = Path("runs/eval")
FACTORS = "2,2.5,4,5"
VARIANTS = {
    "grid_sampling_500": "runs/ablation500_grid/best.safetensors",
    "no_cycle_loss_500": "runs/ablation500_no_cycle/best.safetensors",
    "full_500": "runs/ablation500_full/best.safetensors",
    "stage2_4_blocks": "runs/default_noise/best.safetensors",
    "stage3_8_blocks": "runs/default_wide/best.safetensors",
}
METHODS = ["trilinear", "tricubic", *VARIANTS, "cycleinr"]
TABLE_ROWS = [*METHODS, "cycleinr+dc"]
"""evaluate --consistency adds a +dc row for every model; the tables show the bundled model's."""
HU_ERROR = 200


def make_crops(size: int, slabs: int) -> list[Path]:
    """Samples of the validation scan: consecutive z slabs of its central in-plane square."""
    volume = read_volume(VALIDATION)
    _, h, w = volume.shape
    y0, x0 = (h - size) // 2, (w - size) // 2
    length = volume.shape[0] // slabs
    CROPS.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(slabs):
        shift = np.eye(4)
        shift[:3, 3] = (i * length, y0, x0)
        crop = volume.replace(
            data=np.ascontiguousarray(volume.data[i * length : (i + 1) * length, y0 : y0 + size, x0 : x0 + size]),
            affine=volume.affine @ shift,
        )
        crop.metadata["source_path"] = str(VALIDATION)
        paths.append(write_volume(crop, CROPS / f"lidc0002_slab{i}.nii.gz"))
    return paths


def run_evaluate(crops: list[Path], degradation: str) -> tuple[list[str], list[dict]]:
    command = ["cycleinr", "evaluate", *map(str, crops), "--factor", FACTORS, "--degradation", degradation,
               "--methods", ",".join(METHODS), "--device", "cpu", "--consistency",
               "--json", str(OUT / f"{degradation}.json"), "--plot", str(OUT / f"snli_{degradation}.png")]
    command += [f"--variant={name}={path}" for name, path in VARIANTS.items()]
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True)
    return command, json.loads((OUT / f"{degradation}.json").read_text())["results"]


def summary_table(results: list[dict]) -> str:
    rows = ["| x | method | PSNR dB | SSIM | SNLI |", "|---|---|---|---|---|"]
    for factor in sorted({r["factor"] for r in results}):
        subset = [r for r in results if r["factor"] == factor]
        reference = np.mean([r["reference_snli"] for r in subset])
        rows.append(f"| {factor:g} | thin reference | | | {reference:.3f} |")
        for method in TABLE_ROWS:
            values = [r["methods"][method] for r in subset]
            psnr, ssim, snli = (np.mean([v[k] for v in values]) for k in ("psnr", "ssim", "snli"))
            rows.append(f"| {factor:g} | {method} | {psnr:.2f} | {ssim:.4f} | {snli:.3f} |")
    return "\n".join(rows)


def show_coronal(ax, data: np.ndarray, spacing, title: str, **style) -> object:
    """The middle coronal plane of a (z, y, x) array, in physical proportions."""
    style = {"cmap": "gray", "vmin": -1000, "vmax": 400, **style}
    shown = ax.imshow(data[:, data.shape[1] // 2, :], aspect=spacing[0] / spacing[2], interpolation="nearest", **style)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def figure_error_images(crop: Path, factor: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volume = read_volume(crop)
    models = {"cycleinr": load_model(None)}
    result = evaluate_volume(volume, factor, "average", models, ["tricubic", "cycleinr"], keep_outputs=True)
    reference = result["reference_array"]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), dpi=110)
    for top, (name, image) in zip(axes[0], [("thin reference", reference)] + [(m, result["outputs"][m]) for m in ("tricubic", "cycleinr")]):
        show_coronal(top, image, volume.spacing, f"{name} (coronal, W1400/L-300)")
    axes[1][0].axis("off")
    for bottom, method in zip(axes[1][1:], ("tricubic", "cycleinr")):
        m = result["methods"][method]
        title = f"{method} - reference [-200, 200] HU\nPSNR {m['psnr']:.2f} dB, SNLI {m['snli']:.3f}"
        shown = show_coronal(bottom, result["outputs"][method] - reference, volume.spacing, title, cmap="coolwarm", vmin=-HU_ERROR, vmax=HU_ERROR)
    fig.colorbar(shown, ax=axes[1][1:].tolist(), shrink=0.8, label="HU")
    fig.suptitle(f"x{factor:g} slab average, validation scan LIDC-IDRI-0002 (never trained on)", fontsize=10)
    fig.savefig(OUT / f"error_x{factor:g}.png")
    plt.close(fig)


def figure_scales(crop: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_cycleinr.model.degrade import degrade

    volume = read_volume(crop)
    thick = volume.replace(data=np.rint(degrade(volume.data, 4.0, "average")).astype(np.int16))
    thick = thick.replace(affine=volume.affine @ np.diag([4.0, 1, 1, 1]))
    model = load_model(None)
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.6), dpi=110)
    images = [("5 mm input", thick)] + [
        (f"x{f:g} -> {5 / f:.2f} mm", super_resolve(thick, factor=f, model=model, device="cpu")) for f in (2, 2.5, 4, 6.25)
    ]
    for ax, (title, vol) in zip(axes, images):
        show_coronal(ax, vol.data, vol.spacing, title)
    fig.suptitle("One model, several scales (coronal; 5 mm slab average of the validation scan)", fontsize=10)
    fig.savefig(OUT / "scales.png")
    plt.close(fig)


def figure_real_thick() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volume = read_volume(THICK)
    model = load_model(None)
    out = {m: super_resolve(volume, spacing=1.0, method=m, model=model, device="cpu") for m in ("tricubic", "cycleinr")}
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5), dpi=110)
    for ax, (title, vol) in zip(axes, [("real 5 mm input", volume), ("tricubic 1 mm", out["tricubic"]), ("CycleINR 1 mm", out["cycleinr"])]):
        show_coronal(ax, vol.data, vol.spacing, title)
    fig.suptitle("Real 5 mm chest CT (pyradiomics lung1), super-resolved to 1 mm, coronal", fontsize=10)
    fig.savefig(OUT / "real_5mm_to_1mm.png")
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slabs", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    crops = make_crops(args.size, args.slabs)
    report = {}
    for degradation in ("average", "skip"):
        report[degradation] = run_evaluate(crops, degradation)
    figure_error_images(crops[1], 5.0)
    figure_scales(crops[1])
    figure_real_thick()
    (OUT / "commands.json").write_text(json.dumps({k: v[0] for k, v in report.items()}, indent=2) + "\n")
    for degradation, (command, results) in report.items():
        (OUT / f"table_{degradation}.md").write_text(summary_table(results) + "\n")
        print(f"\n{degradation}\n{summary_table(results)}")
    print(f"default model: {default_model_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
