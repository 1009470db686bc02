"""Regenerate docs/results.md, its JSON and its figures with the project's own evaluate command.

    python scripts/make_results.py [--size 256] [--slabs 2] [--only validation|other|profiles|ensemble|figures]
                                   [--degradations average,skip]

Needs ../shared/data (the held-back validation scan LIDC-IDRI-0002 and the real 5 mm scan), the bundled
weights (`cycleinr`: the default, those for the slice profile scored; `mixed`: stage 5, which they were
fine-tuned from), the mixed weights' earlier stages (`runs/default_noise`: stage 2, 4 encoder blocks; `runs/default_wide`:
stage 3, 8 blocks; `runs/stage4_deep`: stage 4, 12 blocks), the two stronger-noise-loss models that were
tried and not taken (`runs/default_wide_noise`: stage 3 fine-tuned with noise weight 0.1; `runs/default_deep`:
stage 3 grown to 12 blocks, noise weight 0.1), and the ablation study: three runs of 500 steps, identical but
for the switch under test,

    cycleinr train --config configs/default.toml --out runs/ablation500_full --steps 500
    cycleinr train --config configs/ablation_grid.toml --out runs/ablation500_grid --steps 500
    cycleinr train --config configs/ablation_no_cycle.toml --out runs/ablation500_no_cycle --steps 500
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from evaluate_runs import run_commands

from napari_cycleinr.io import read_volume, write_volume
from napari_cycleinr.model.checkpoint import BUNDLED_MODELS, default_model_path, load_model
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
    "noise_weight_0p1": "runs/default_wide_noise/best.safetensors",
    "grown_12_blocks": "runs/default_deep/best.safetensors",
    "stage4_12_blocks": "runs/stage4_deep/best.safetensors",
    "mixed": "mixed",
}
METHODS = ["trilinear", "tricubic", *VARIANTS, "cycleinr"]
TABLE_ROWS = [*METHODS, "mixed+dc", "cycleinr+dc"]
"""evaluate --consistency adds a +dc row for every model; the tables show the bundled weights'."""
HU_ERROR = 200
OTHER_SCANS = {
    "CT": ["tests/data/ct_totalseg_sm_122x101x30_3mm.nii.gz", "tests/data/ct_vtk_headsq_64x64x93_1p5mm.nii.gz"],
    "MR": ["tests/data/mr_totalseg_sm_117x91x20_3mm.nii.gz"],
}
"""Held-out scans unlike the validation scan (3 mm iso CT, a head CT with 3.2 mm pixels, MR): is a stage's
gain on LIDC real, or learnt for that kind of scan only?"""
ENSEMBLE_ROWS = ["tricubic", "cycleinr", "cycleinr+ens", "cycleinr+dc", "cycleinr+ens+dc"]
"""The z self-ensemble (upsample --ensemble) against one pass, with and without data consistency; measured on
the mixed weights (`--model mixed`), the default before the profile's weights were."""
OTHER_METHODS = ["tricubic", "stage2_4_blocks", "stage3_8_blocks", "noise_weight_0p1", "grown_12_blocks",
                 "stage4_12_blocks", "mixed", "cycleinr"]
PROFILES = ("average", "gaussian", "skip")
PROFILE_FACTORS = "2.5,5"
"""Every bundled weight on every slice profile (which weights for which scan?), at two factors to save time."""


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
        path = CROPS / f"lidc0002_slab{i}.nii.gz"
        write_volume(crop, path)
        paths.append(path)  # relative, so that commands.json is the command on any clone
    return paths


def run_evaluate(
    references: list, degradation: str, name: str, methods: list[str], *extra: str, factors: str = FACTORS
) -> tuple[list[str], list[dict]]:
    """`cycleinr evaluate` of `methods` on `references`, its JSON written to docs/results/<name>.json."""
    command = ["cycleinr", "evaluate", *map(str, references), "--factor", factors, "--degradation", degradation,
               "--methods", ",".join(methods), "--device", "cpu", "--json", str(OUT / f"{name}.json"), *extra]
    command += [f"--variant={v}={VARIANTS.get(v, v)}" for v in methods if v in VARIANTS or v in BUNDLED_MODELS]
    run_commands([command])
    return command, json.loads((OUT / f"{name}.json").read_text())["results"]


def other_scans_table(results: list[dict], methods: list[str]) -> str:
    """PSNR per scan and factor: tricubic's, and each model's gain over it; the mean gain last."""
    models = [m for m in methods if m != "tricubic"]
    rows = ["| scan | x | tricubic dB | " + " | ".join(models) + " |", "|---" * (3 + len(models)) + "|"]
    gains = {m: [] for m in models}
    for r in results:
        base = r["methods"]["tricubic"]["psnr"]
        cells = []
        for m in models:
            gain = r["methods"][m]["psnr"] - base
            gains[m].append(gain)
            cells.append(f"{gain:+.2f}")
        scan = Path(r["reference"]).name.split(".")[0]
        rows.append(f"| {scan} | {r['factor']:g} | {base:.2f} | " + " | ".join(cells) + " |")
    rows.append("| mean gain | | | " + " | ".join(f"**{np.mean(g):+.2f}**" for g in gains.values()) + " |")
    return "\n".join(rows)


def ensemble_table(results: list[dict]) -> str:
    """Per factor (means over the references): tricubic, the bundled model alone, with the z self-ensemble,
    and either after the exact data-consistency step (when scored): PSNR dB / SNLI, and seconds per volume."""
    rows = [r for r in ENSEMBLE_ROWS if r in results[0]["methods"]]
    lines = ["| x | " + " | ".join(rows) + " | seconds (cycleinr, +ens) |", "|---" * (len(rows) + 2) + "|"]
    for factor in sorted({r["factor"] for r in results}):
        subset = [r for r in results if r["factor"] == factor]

        def mean(method: str, key: str, subset: list[dict] = subset) -> float:
            return float(np.mean([r["methods"][method][key] for r in subset]))

        cells = [f"{mean(m, 'psnr'):.2f} / {mean(m, 'snli'):.4f}" for m in rows]
        seconds = f"{mean('cycleinr', 'seconds'):.1f}, {mean('cycleinr+ens', 'seconds'):.1f}"
        lines.append(f"| {factor:g} | " + " | ".join(cells) + f" | {seconds} |")
    return "\n".join(lines)


def profiles_table(results: dict[str, list[dict]]) -> str:
    """Rows: the slice profile the thick slices were made with, and the factor; columns: tricubic and each
    bundled weight, PSNR dB / SNLI as means over the references. The default picks the weights of its row's profile."""
    models = ["tricubic", *BUNDLED_MODELS]
    lines = ["| profile | x | " + " | ".join(models) + " |", "|---" * (2 + len(models)) + "|"]
    for profile, part in results.items():
        for factor in sorted({r["factor"] for r in part}):
            subset = [r for r in part if r["factor"] == factor]
            cells = []
            for m in models:
                psnr, snli = (float(np.mean([r["methods"][m][k] for r in subset])) for k in ("psnr", "snli"))
                cells.append(f"{psnr:.2f} / {snli:.4f}")
            lines.append(f"| {profile} | {factor:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    parser.add_argument("--only", choices=["validation", "other", "profiles", "ensemble", "figures"], help="one part (default: all)")
    parser.add_argument("--degradations", default="average,skip", help="of the validation, other and ensemble parts")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    crops = make_crops(args.size, args.slabs)
    commands_file = OUT / "commands.json"
    commands = json.loads(commands_file.read_text()) if commands_file.exists() else {}
    degradations = [d for d in args.degradations.split(",") if d]
    if args.only in (None, "validation"):
        for degradation in degradations:
            command, results = run_evaluate(crops, degradation, degradation, METHODS, "--consistency", "--plot",
                                            str(OUT / f"snli_{degradation}.png"))
            commands[degradation] = command
            (OUT / f"table_{degradation}.md").write_text(summary_table(results) + "\n")
            print(f"\n{degradation}\n{summary_table(results)}")
    if args.only in (None, "other"):
        for degradation in degradations:
            results = []
            for modality, scans in OTHER_SCANS.items():
                name = f"other_{modality.lower()}_{degradation}"
                command, part = run_evaluate(scans, degradation, name, OTHER_METHODS, "--modality", modality)
                commands[name] = command
                results += part
            table = other_scans_table(results, OTHER_METHODS)
            (OUT / f"table_other_{degradation}.md").write_text(table + "\n")
            print(f"\nother scans, {degradation}\n{table}")
    if args.only in (None, "profiles"):
        weights = ["tricubic", *BUNDLED_MODELS]
        on_crops, on_others = {}, {}
        for profile in PROFILES:
            name = f"profiles_{profile}"
            commands[name], on_crops[profile] = run_evaluate(crops, profile, name, weights, factors=PROFILE_FACTORS)
            on_others[profile] = []
            for modality, scans in OTHER_SCANS.items():
                name = f"profiles_other_{modality.lower()}_{profile}"
                commands[name], part = run_evaluate(scans, profile, name, weights, "--modality", modality)
                on_others[profile] += part
        table = profiles_table(on_crops) + "\n\nOther scans, mean PSNR gain over tricubic (x2, x2.5, x4, x5):\n\n"
        table += "| profile | " + " | ".join(BUNDLED_MODELS) + " |\n" + "|---" * (1 + len(BUNDLED_MODELS)) + "|\n"
        for profile, part in on_others.items():
            gains = [np.mean([r["methods"][m]["psnr"] - r["methods"]["tricubic"]["psnr"] for r in part]) for m in BUNDLED_MODELS]
            table += f"| {profile} | " + " | ".join(f"{g:+.2f}" for g in gains) + " |\n"
        (OUT / "table_profiles.md").write_text(table)
        print(f"\nbundled weights by slice profile\n{table}")
    if args.only in (None, "ensemble"):
        for degradation in degradations:
            name = f"ensemble_{degradation}"
            command, results = run_evaluate(crops, degradation, name, ["tricubic", "cycleinr"], "--ensemble",
                                            "--consistency", "--model", "mixed")
            commands[name] = command
            other = []
            for modality, scans in OTHER_SCANS.items():
                name = f"ensemble_other_{modality.lower()}_{degradation}"
                command, part = run_evaluate(scans, degradation, name, ["tricubic", "cycleinr"], "--ensemble",
                                             "--modality", modality, "--model", "mixed")
                commands[name] = command
                other += part
            table = ensemble_table(results) + "\n\nOther scans, PSNR gain over tricubic:\n\n"
            table += other_scans_table(other, ["tricubic", "cycleinr", "cycleinr+ens"])
            (OUT / f"table_ensemble_{degradation}.md").write_text(table + "\n")
            print(f"\nz self-ensemble, {degradation}\n{table}")
    if args.only in (None, "figures"):
        figure_error_images(crops[1], 5.0)
        figure_scales(crops[1])
        figure_real_thick()
    commands_file.write_text(json.dumps(commands, indent=2) + "\n")
    print(f"default model (slab average): {default_model_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
