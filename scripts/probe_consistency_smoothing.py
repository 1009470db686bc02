"""What the data-consistency step's smoothing buys and costs (docs/results.md, "Consistency smoothing").

    python scripts/probe_consistency_smoothing.py [--sigmas 0,0.5,1,2]

The exact step (sigma 0) spreads the whole residual y - W x over each slab, its fine grain included, which is
mostly the thick slices' own noise: it comes back as slab-to-slab jumps of the noise level (SNLI). With sigma
> 0 only the residual blurred in-plane by that Gaussian is corrected. Scored with the slab average at x5 on
the two samples of the held-out validation scan (runs/eval, written by scripts/make_results.py; one pass and
the z self-ensemble) and at x4 and x5 on the three scans unlike it in tests/data. Writes
docs/results/consistency_smoothing.json and prints PSNR dB / SNLI per case.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.consistency import project
from napari_cycleinr.model.degrade import degradation_matrix
from napari_cycleinr.model.evaluate import metric_window, simulate_thick
from napari_cycleinr.model.infer import predict
from napari_cycleinr.model.metrics import psnr, snli

VALIDATION = [Path("runs/eval/lidc0002_slab0.nii.gz"), Path("runs/eval/lidc0002_slab1.nii.gz")]
OTHER = [
    ("tests/data/ct_totalseg_sm_122x101x30_3mm.nii.gz", "CT"),
    ("tests/data/ct_vtk_headsq_64x64x93_1p5mm.nii.gz", "CT"),
    ("tests/data/mr_totalseg_sm_117x91x20_3mm.nii.gz", "MR"),
]
OUT = Path("docs/results/consistency_smoothing.json")


def cases(model):
    """(name, thick, reference, intensities, window, operator, normalised output) for every case scored."""
    for path in VALIDATION:
        thick, reference, positions, intensities = simulate_thick(read_volume(path), 5.0, "average")
        operator = degradation_matrix(len(positions), 5.0, "average", n_thick=thick.shape[0])
        window = metric_window(reference, intensities.modality)
        one = predict("cycleinr", thick, positions, 0.2, model=model)
        mirrored = predict("cycleinr", thick, positions, 0.2, mirrored=True, model=model)
        yield "lidc0002 x5", thick, reference, intensities, window, operator, one
        yield "lidc0002 x5 ensemble", thick, reference, intensities, window, operator, (one + mirrored) / 2
    for path, modality in OTHER:
        volume = read_volume(path, axis="z")
        for factor in (4.0, 5.0):
            thick, reference, positions, intensities = simulate_thick(volume, factor, "average", modality)
            operator = degradation_matrix(len(positions), factor, "average", n_thick=thick.shape[0])
            window = metric_window(reference, intensities.modality)
            output = predict("cycleinr", thick, positions, 1 / factor, model=model)
            name = "_".join(Path(path).name.split("_")[:2])  # ct_totalseg, ct_vtk, mr_totalseg
            yield f"{name} x{factor:g}", thick, reference, intensities, window, operator, output


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sigmas", default="0,0.5,1,2")
    args = parser.parse_args()
    sigmas = [float(s) for s in args.sigmas.split(",")]
    scores: dict[str, dict[str, list]] = {}
    for name, thick, reference, intensities, window, operator, output in cases(load_model("mixed")):  # the default model when measured
        for label, sigma in [("no consistency step", None), *((f"sigma {s:g}", s) for s in sigmas)]:
            values = output.copy()
            if sigma is not None:
                project(values, thick, operator, smoothing=sigma)
            result = intensities.denormalise(values)
            row = scores.setdefault(name, {}).setdefault(label, [])
            row.append((psnr(reference, result, window), snli(result, intensities.modality)))
    table = {name: {label: {"psnr": float(np.mean([p for p, _ in v])), "snli": float(np.mean([s for _, s in v]))}
                    for label, v in rows.items()} for name, rows in scores.items()}
    OUT.write_text(json.dumps({"profile": "average", "cases": table}, indent=2) + "\n")
    labels = list(next(iter(table.values())))
    print("| case | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for name, rows in table.items():
        print(f"| {name} | " + " | ".join(f"{rows[k]['psnr']:.2f} / {rows[k]['snli']:.4f}" for k in labels) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
