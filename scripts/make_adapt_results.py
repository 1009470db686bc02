"""Measure "adapt to this scan" (docs/results.md): thin scans of other domains than the training data,
degraded to thick slices at x4, super-resolved by tricubic, the shipped mixed-profile weights and those adapted to the
thick scan alone (no thin data), each also after the exact data-consistency step (+dc).

    python scripts/make_adapt_results.py [--minutes 3] [--factor 4] [--noise-weight 0.05]

Writes docs/results/adapt.json and table_adapt.md (the default noise weight), or adapt_noise<W>.json and
table_adapt_noise<W>.md for another weight.

Uses only files inside the project (tests/data and the bundled sample), so it runs on any clone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.adapt import ADAPT_TRAINING, AdaptOptions, adapt_model
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.evaluate import evaluate_volume, simulate_thick
from napari_cycleinr.volume import Volume, resampled_z_affine

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("MR (TotalSegmentator sample, 3 mm)", "tests/data/mr_totalseg_sm_117x91x20_3mm.nii.gz"),
    ("head CT (VTK headsq, 1.5 mm slices, 3.2 mm pixels)", "tests/data/ct_vtk_headsq_64x64x93_1p5mm.nii.gz"),
    ("chest CT, training domain (bundled sample, LIDC, held out)", "src/napari_cycleinr/sample_data/chest_ct_1p25mm.nii.gz"),
]
METHODS = ["tricubic", "shipped", "adapted"]
OUT = ROOT / "docs/results"


def thick_scan(volume: Volume, factor: float) -> tuple[Volume, str]:
    """The thick-slice scan a user would have: the reference slab-averaged along z, with its geometry."""
    thick, _, _, intensities = simulate_thick(volume, factor, "average")
    data = intensities.denormalise(thick).astype(np.float32)
    return Volume(data, resampled_z_affine(volume.affine, factor)), intensities.modality


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--noise-weight", type=float, default=ADAPT_TRAINING.noise_weight)
    args = parser.parse_args()
    options = AdaptOptions(minutes=args.minutes, noise_weight=args.noise_weight)
    suffix = "" if args.noise_weight == ADAPT_TRAINING.noise_weight else f"_noise{args.noise_weight:g}"
    shipped = load_model("mixed", "cpu")  # what the committed tables measured; the default is load_model(None)
    results = []
    for title, relative in CASES:
        volume = read_volume(ROOT / relative, axis="z")
        thick, modality = thick_scan(volume, args.factor)
        print(f"{title}: {volume.shape} -> thick {thick.shape}, spacing {thick.spacing}", flush=True)
        adapted, report = adapt_model(
            thick, factor=args.factor, model=shipped, options=options, device="cpu",
            modality=modality,
        )
        print(" ", report.summary(), flush=True)
        result = evaluate_volume(
            volume, args.factor, "average", {"shipped": shipped, "adapted": adapted}, METHODS, modality,
            device="cpu", consistency=True,
        )
        result.update(title=title, reference=relative, thick_shape=list(thick.shape), adaptation=report.as_dict())
        results.append(result)
        for method, m in result["methods"].items():
            print(f"  {method:<12} PSNR {m['psnr']:.2f} SSIM {m['ssim']:.4f} SNLI {m['snli']:.3f}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    command = [
        "python", "scripts/make_adapt_results.py", "--minutes", f"{args.minutes:g}", "--factor", f"{args.factor:g}",
        "--noise-weight", f"{args.noise_weight:g}",
    ]
    (OUT / f"adapt{suffix}.json").write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
    (OUT / f"table_adapt{suffix}.md").write_text(table(results) + "\n")
    print(table(results))
    return 0


def table(results: list[dict]) -> str:
    rows = [
        "| scan | x | method | PSNR dB | SSIM | SNLI |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        a = r["adaptation"]
        rows.append(f"| {r['title']} | {r['factor']:g} | thin reference | | | {r['reference_snli']:.3f} |")
        for method, m in r["methods"].items():
            note = ""
            if method == "adapted":
                note = f" ({a['steps']} steps, {a['seconds']:.0f} s, {'kept' if a['kept'] else 'not kept'})"
            rows.append(f"| | | {method}{note} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['snli']:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
