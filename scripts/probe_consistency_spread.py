"""Exact data consistency without lines at the slab period (docs/results.md, "Exact data consistency without
lines"): the correction spread along z by a Gaussian of 0, 1/2, 1 and 2 acquired slice spacings.

    python scripts/probe_consistency_spread.py [--out docs/results/consistency_spread.json] [--table]

The scans in tests/data (CT) and one 256 x 256 sample of the held-out CT (runs/eval/lidc0002_slab0.nii.gz,
written by scripts/make_results.py), each profile at x4 and x5 with the bundled weights for it: PSNR and banding
of the model's output and of each corrected one. 0 is the orthogonal step (one constant per slab under a slab
average); the shipped choice is model/consistency.SPREAD for slab averages and Gaussian profiles, 0 for gaps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.consistency import output_degradation, project
from napari_cycleinr.model.evaluate import metric_window, simulate_thick
from napari_cycleinr.model.infer import predict
from napari_cycleinr.model.metrics import banding, psnr

SPREADS = (0.0, 0.5, 1.0, 2.0)
TESTS = Path(__file__).resolve().parents[1] / "tests" / "data"
SCANS = {
    "LIDC-IDRI-0002 (held out), 256 x 256 sample": ("runs/eval/lidc0002_slab0.nii.gz", None),
    "tests/data LIDC crop": (TESTS / "ct_lidc0002_crop_128x128x40_1p25mm.nii.gz", None),
    "tests/data VTK head": (TESTS / "ct_vtk_headsq_64x64x93_1p5mm.nii.gz", "z"),
    "tests/data TotalSegmentator CT": (TESTS / "ct_totalseg_sm_122x101x30_3mm.nii.gz", None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results/consistency_spread.json")
    parser.add_argument("--table", action="store_true", help="only print the table from --out")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text())["rows"]))
        return
    rows = []
    for profile in ("average", "gaussian", "skip"):
        model = load_model(None, profile=profile)
        for scan, (path, axis) in SCANS.items():
            volume = read_volume(path, axis=axis)
            for factor in (4, 5):
                thick, reference, positions, intensities = simulate_thick(volume, factor, profile, "CT")
                window = metric_window(reference, "CT")
                output = predict("cycleinr", thick, positions, 1 / factor, model=model)
                w = output_degradation(thick.shape[0], output.shape[0], profile)
                row = {"profile": profile, "scan": scan, "factor": factor}
                for spread in (None, *SPREADS):
                    corrected = output.copy()
                    if spread is not None:
                        project(corrected, thick, w, spread=spread * output.shape[0] / thick.shape[0])
                    hu = intensities.denormalise(corrected)
                    row["model" if spread is None else f"spread {spread:g}"] = {
                        "psnr": round(psnr(reference, hu, window), 3), "banding": round(banding(hu, factor), 3)}
                rows.append(row)
                print(row, flush=True)
    Path(args.out).write_text(json.dumps({"spreads_in_slice_spacings": SPREADS, "rows": rows}, indent=1) + "\n")
    print(table(rows))


def table(rows: list[dict]) -> str:
    """Per profile: the mean PSNR gain over the model's output (8 cases: 4 scans, x4 and x5), and the range
    of banding."""
    columns = ["model", *(f"spread {s:g}" for s in SPREADS)]
    lines = ["| profile | no correction | " + " | ".join(f"spread {s:g}" for s in SPREADS) + " |",
             "|---|" + "---|" * len(columns)]
    for profile in dict.fromkeys(r["profile"] for r in rows):
        part = [r for r in rows if r["profile"] == profile]
        cells = []
        for column in columns:
            gain = sum(r[column]["psnr"] - r["model"]["psnr"] for r in part) / len(part)
            low, high = min(r[column]["banding"] for r in part), max(r[column]["banding"] for r in part)
            cells.append(f"{gain:+.2f} dB, {low:.2f}-{high:.2f}")
        lines.append(f"| {profile} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
