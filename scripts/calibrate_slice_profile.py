"""Calibrate the image estimate of the slice profile and measure its accuracy (docs/results.md).

    python scripts/calibrate_slice_profile.py [--data ../shared/data]

Thick scans are simulated from thin ones with each profile at x2.5, x4 and x5. The class boundaries on the
estimate's position are the midpoints between the classes' median positions on the TRAINING scans; the
accuracy is then measured on the held-out validation scans (LIDC-IDRI-0002 and the MEMPRAGE MR) and on the
tests/data scans, and the estimate for the real 5 mm scan is reported. Writes
docs/results/slice_profile_estimate.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_cycleinr import slice_profile
from napari_cycleinr.intensity import guess_modality
from napari_cycleinr.io import read_volume

TRAINING = ["train/ct_invesalius0051_head_1p5mm.nii.gz", "train/ct_4dlung_phase00_chest_2p0mm.nii.gz",
            "train/ct_totalseg_aortacrop_chest_1p5mm_resampled.nii.gz",
            "train/ct_dcmqa_philips_phantom_head_1p0mm.nii.gz", "train/mr_sag_anon_mprage_0p9mm.nii.gz"]
VALIDATION = ["train/ct_lidc0002_chest_1p25mm.nii.gz", "train/mr_fnndsc_memprage_1p0mm.nii.gz"]
TESTS = ["tests/data/ct_lidc0002_crop_128x128x40_1p25mm.nii.gz", "tests/data/ct_vtk_headsq_64x64x93_1p5mm.nii.gz"]
THICK = "thick/ct_pyradiomics_lung1_5mm.nii.gz"
FACTORS = (2.5, 4.0, 5.0)
TRUTH = {"skip": ("skip", None), "average": ("average", None), "gaussian": ("gaussian", None)}


def positions(path: Path) -> list[dict]:
    volume = read_volume(path)
    data, spacing = slice_profile.central_square(volume.data), volume.spacing
    modality = guess_modality(volume.data)
    rows = []
    for factor in FACTORS:
        for kind in slice_profile.PROFILES:
            matrix = slice_profile.profile_weights(data.shape[0], factor, kind).astype(np.float32)
            thick = np.tensordot(matrix, data, axes=(1, 0))
            thick_spacing = (spacing[0] * factor, spacing[1], spacing[2])
            position = slice_profile.profile_position(thick, thick_spacing, modality)
            found = slice_profile.estimate(thick, thick_spacing, modality)
            rows.append({"scan": path.name, "modality": modality, "factor": factor, "truth": kind,
                         "position": round(position, 4) if np.isfinite(position) else None,
                         "estimate": found.kind, "confidence": round(found.confidence or 0.0, 3)})
            print(rows[-1], flush=True)
    return rows


def accuracy(rows: list[dict]) -> dict:
    """How often the estimate names the true profile, and how often it is confident and wrong."""
    return {"cases": len(rows), "right": sum(r["truth"] == r["estimate"] for r in rows),
            "confident_and_wrong": sum(r["truth"] != r["estimate"] and r["confidence"] >= 0.5 for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="docs/results/slice_profile_estimate.json")
    args = parser.parse_args()
    data = Path(args.data)
    training = [row for name in TRAINING for row in positions(data / name)]
    usable = [r for r in training if r["position"] is not None
              and slice_profile.PLAUSIBLE[0] <= r["position"] <= slice_profile.PLAUSIBLE[1]]
    means = {k: float(np.median([r["position"] for r in usable if r["truth"] == k])) for k in slice_profile.PROFILES}
    boundaries = {"gaussian_below": (means["gaussian"] + means["average"]) / 2,
                  "gaps_above": (means["average"] + means["skip"]) / 2}
    print("class means", means, "boundaries", boundaries, flush=True)
    held_out = [row for name in VALIDATION for row in positions(data / name)]
    held_out += [row for name in TESTS for row in positions(Path(name))]
    real = read_volume(data / THICK)
    found = slice_profile.estimate(slice_profile.central_square(real.data), real.spacing, "CT")
    summary = {
        "training_class_medians": means,
        "boundaries": boundaries,
        "module_boundaries": {"gaussian_below": slice_profile.GAUSSIAN_BELOW, "gaps_above": slice_profile.GAPS_ABOVE},
        "accuracy_training": {m: accuracy([r for r in training if r["modality"] == m]) for m in ("CT", "MR")},
        "accuracy_held_out": {m: accuracy([r for r in held_out if r["modality"] == m]) for m in ("CT", "MR")},
        "real_5mm_scan": found.to_record() | {"detail": found.detail},
        "training": training,
        "held_out": held_out,
    }
    Path(args.out).write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("training", "held_out")}, indent=1))


if __name__ == "__main__":
    main()
