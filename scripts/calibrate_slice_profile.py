"""Calibrate the image estimate of the slice profile and measure its accuracy (docs/results.md).

    python scripts/calibrate_slice_profile.py [--data ../shared/data] [--table]

Thick scans are simulated from thin ones with each profile at x2.5, x4 and x5. The class boundaries on the
estimate's position, and the shared-noise boundary, are the midpoints between the classes' medians on the
TRAINING scans; the accuracy is then measured on the held-out validation scans (LIDC-IDRI-0002 and the
MEMPRAGE MR) and on the tests/data scans, whole and in runs of 16 thick slices, and the estimates for the
real 5 mm scan and the bundled sample are reported. Writes docs/results/slice_profile_estimate.json and prints
the table of docs/results.md (--table: the table only, from the JSON)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
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
SAMPLE = "src/napari_cycleinr/sample_data/chest_ct_5mm.nii.gz"  # a 5 mm slab average, 16 slices
FACTORS = (2.5, 4.0, 5.0)
SHORT = 16
TRUTH = {"skip": ("skip", None), "average": ("average", None), "gaussian": ("gaussian", None)}


def run_starts(slices: int, window: int) -> list[int]:
    """Where the four runs of `window` thick slices of a scan of `slices` begin (evenly spread, deduplicated)."""
    return sorted({int(s) for s in np.linspace(0, slices - window, 4)})


def thick_cases(path: Path, window: int | None = None) -> Iterator[tuple[str, float, str, np.ndarray, tuple]]:
    """(modality, factor, profile, thick slices, thick spacing) for every profile at every factor; with
    `window`, four runs of that many thick slices instead of the whole scan (a short scan: the bundled sample
    has 16)."""
    volume = read_volume(path)
    data, spacing = slice_profile.central_square(volume.data), volume.spacing
    modality = guess_modality(volume.data)
    for factor in FACTORS:
        for kind in slice_profile.PROFILES:
            matrix = slice_profile.profile_weights(data.shape[0], factor, kind).astype(np.float32)
            whole = np.tensordot(matrix, data, axes=(1, 0))
            if window is not None and len(whole) < window:
                continue
            starts = [0] if window is None else run_starts(len(whole), window)
            for start in starts:
                thick = whole if window is None else whole[start : start + window]
                yield modality, factor, kind, thick, (spacing[0] * factor, *spacing[1:])


def positions(path: Path, window: int | None = None) -> list[dict]:
    """The estimate on every case of `thick_cases`."""
    rows = []
    for modality, factor, kind, thick, spacing in thick_cases(path, window):
        rows.append(case(path.name, modality, factor, kind, thick, spacing))
        rows[-1]["slices"] = len(thick)
        print(rows[-1], flush=True)
    return rows


def case(name: str, modality: str, factor: float, kind: str, thick: np.ndarray, spacing: tuple) -> dict:
    position = slice_profile.profile_position(thick, spacing, modality)
    shared = slice_profile.shared_noise(thick, modality)
    found = slice_profile.estimate(thick, spacing, modality)
    return {"scan": name, "modality": modality, "factor": factor, "truth": kind,
            "position": round(position, 4) if np.isfinite(position) else None,
            "shared_noise": round(shared, 4) if np.isfinite(shared) else None,
            "estimate": found.kind, "thickness": round(found.thickness, 3),
            "confidence": round(found.confidence or 0.0, 3)}


def accuracy(rows: list[dict]) -> dict:
    """How often the estimate names the true profile, how often it is confident (and so picks the weights),
    how often confident and wrong, and the error of the Gaussian width (true FWHM = spacing) where confident."""
    confident = [r for r in rows if r["confidence"] >= 0.5]
    widths = [abs(r["thickness"] - 1.0) for r in confident if r["truth"] == r["estimate"] == "gaussian"]
    return {"cases": len(rows), "right": sum(r["truth"] == r["estimate"] for r in rows),
            "confident": len(confident),
            "confident_and_wrong": sum(r["truth"] != r["estimate"] for r in confident),
            "gaussian_cases": sum(r["truth"] == "gaussian" for r in rows),
            "gaussian_confident_and_right": len(widths),
            "gaussian_width_error_max": round(max(widths), 3) if widths else None,
            "gaussian_width_error_mean": round(float(np.mean(widths)), 3) if widths else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="docs/results/slice_profile_estimate.json")
    parser.add_argument("--table", action="store_true", help="only print the table from --out")
    args = parser.parse_args()
    if args.table:
        summary = json.loads(Path(args.out).read_text())
        print(table(summary) + "\n\n" + real_table(summary))
        return
    data = Path(args.data)
    training = [row for name in TRAINING for row in positions(data / name)]
    usable = [r for r in training if r["position"] is not None
              and slice_profile.PLAUSIBLE[0] <= r["position"] <= slice_profile.PLAUSIBLE[1]]
    means = {k: float(np.median([r["position"] for r in usable if r["truth"] == k])) for k in slice_profile.PROFILES}
    shared = {k: float(np.median([r["shared_noise"] for r in usable if r["truth"] == k and r["shared_noise"] is not None]))
              for k in slice_profile.PROFILES}
    boundaries = {"gaussian_below": (means["gaussian"] + means["average"]) / 2,
                  "gaps_above": (means["average"] + means["skip"]) / 2,
                  "shared_noise_above": (shared["gaussian"] + shared["average"]) / 2}
    print("class means", means, "boundaries", boundaries, flush=True)
    held_out = [row for name in VALIDATION for row in positions(data / name)]
    held_out += [row for name in TESTS for row in positions(Path(name))]
    short = [row for name in VALIDATION for row in positions(data / name, SHORT)]
    short += [row for name in TESTS for row in positions(Path(name), SHORT)]
    real = read_volume(data / THICK)
    found = slice_profile.estimate(slice_profile.central_square(real.data), real.spacing, "CT")
    bundled = read_volume(SAMPLE)
    sample = slice_profile.estimate(bundled.data, bundled.spacing, "CT")
    as_they_are = [as_it_is(data / name) for name in (*TRAINING, *VALIDATION, THICK)] + [as_it_is(Path(SAMPLE))]
    summary = {
        "training_class_medians": means,
        "training_shared_noise_medians": shared,
        "boundaries": boundaries,
        "module_boundaries": {"gaussian_below": slice_profile.GAUSSIAN_BELOW, "gaps_above": slice_profile.GAPS_ABOVE,
                              "shared_noise_above": slice_profile.SHARED_NOISE_ABOVE},
        "accuracy_training": {m: accuracy([r for r in training if r["modality"] == m]) for m in ("CT", "MR")},
        "accuracy_held_out": {m: accuracy([r for r in held_out if r["modality"] == m]) for m in ("CT", "MR")},
        "accuracy_held_out_short": {m: accuracy([r for r in short if r["modality"] == m]) for m in ("CT", "MR")},
        "real_5mm_scan": found.to_record() | {"detail": found.detail},
        "bundled_sample": sample.to_record() | {"detail": sample.detail},
        "training": training,
        "held_out": held_out,
        "held_out_short": short,
        "as_they_are": as_they_are,
    }
    Path(args.out).write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("training", "held_out", "held_out_short")}, indent=1))
    print(table(summary) + "\n\n" + real_table(summary))


def as_it_is(path: Path) -> dict:
    """What a real scan reads as, with no degradation: no thin reference says what is right."""
    volume = read_volume(path)
    modality = guess_modality(volume.data)
    found = slice_profile.estimate(volume.data, volume.spacing, modality)
    return {"scan": path.name, "modality": modality, "spacing_mm": round(volume.spacing[0], 3),
            "slices": volume.shape[0], "estimate": found.kind, "confidence": round(found.confidence or 0.0, 3),
            "detail": found.detail}


def real_table(summary: dict) -> str:
    lines = ["| real scan, as it is | slice spacing mm | slices | reads as | confidence | position, shared noise |",
             "|---|---:|---:|---|---:|---|"]
    for r in summary["as_they_are"]:
        lines.append(f"| {r['scan']} ({r['modality']}) | {r['spacing_mm']:g} | {r['slices']} | {r['estimate']} | "
                     f"{r['confidence']:.2f} | {r['detail']} |")
    return "\n".join(lines)


def table(summary: dict) -> str:
    """The accuracy table of docs/results.md, "Finding the slice profile"."""
    lines = ["| scans | cases | right | confident (picks the weights) | confident and wrong "
             "| Gaussian: confident and right | Gaussian width error (mean / max) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    parts = (("training scans (calibration)", "accuracy_training"), ("held-out scans", "accuracy_held_out"),
             ("held-out scans, 16-slice runs", "accuracy_held_out_short"))
    for name, key in parts:
        for modality, a in summary[key].items():
            width = ("" if a["gaussian_width_error_max"] is None
                     else f"{a['gaussian_width_error_mean']:.2f} / {a['gaussian_width_error_max']:.2f}")
            lines.append(f"| {name}, {modality} | {a['cases']} | {a['right']} | {a['confident']} | "
                         f"{a['confident_and_wrong']} | {a['gaussian_confident_and_right']} of {a['gaussian_cases']} "
                         f"| {width} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
