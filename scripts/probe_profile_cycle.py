"""Can the model's own cycle residual tell the slice profile? (docs/method.md, "Which weights": measured, not used.)

    python scripts/probe_profile_cycle.py

The fallback weights (`mixed` for CT, `mr` for MR) super-resolve the thick scan at x4; the output, degraded back
with each profile, reproduces the input best with the profile that made it, within a scan. Two features, the
log ratios of the mean residuals (gaps / slab average, Gaussian / slab average), for the real through-plane
axis and for each profile simulated along an in-plane axis at the same slice spacing in mm (self-calibration,
as the image estimate does); the nearest simulation names the profile. Synthetic slab-average, Gaussian and
gapped degradations of the training and held-out (*) scans at x2.5, x4 and x5; JSON:
docs/results/profile_cycle_residual.json. Run from the repository root with ../shared/data present.
"""

from __future__ import annotations

import json
import math

import numpy as np

from napari_cycleinr.intensity import intensity_map
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.degrade import degrade
from napari_cycleinr.model.infer import predict

DATA = "../shared/data/train/"
SCANS = [
    ("head", DATA + "ct_invesalius0051_head_1p5mm.nii.gz", None, "CT"),
    ("4dlung", DATA + "ct_4dlung_phase00_chest_2p0mm.nii.gz", None, "CT"),
    ("aorta", DATA + "ct_totalseg_aortacrop_chest_1p5mm_resampled.nii.gz", None, "CT"),
    ("sag-MR", DATA + "mr_sag_anon_mprage_0p9mm.nii.gz", "z", "MR"),
    ("LIDC*", DATA + "ct_lidc0002_chest_1p25mm.nii.gz", None, "CT"),
    ("MEMPRAGE*", DATA + "mr_fnndsc_memprage_1p0mm.nii.gz", "z", "MR"),
    ("vtk*", "tests/data/ct_vtk_headsq_64x64x93_1p5mm.nii.gz", "z", "CT"),
]
PROFILES = ("average", "gaussian", "skip")
DETECTION_FACTOR = 4.0


def features(thick: np.ndarray, model) -> np.ndarray:
    """log(gaps / slab average) and log(Gaussian / slab average) of the mean cycle residuals."""
    n = len(thick)
    positions = (np.arange(int(n * DETECTION_FACTOR)) + 0.5) / DETECTION_FACTOR - 0.5
    output = predict("cycleinr", thick, positions, 1 / DETECTION_FACTOR, model=model)
    residual = {p: float(np.abs(degrade(output, DETECTION_FACTOR, p, n_thick=n) - thick).mean()) for p in PROFILES}
    return np.array([math.log(residual["skip"] / residual["average"]),
                     math.log(residual["gaussian"] / residual["average"])])


def real_and_simulated(thick: np.ndarray, spacing: tuple, model) -> tuple[np.ndarray, dict]:
    _, h, w = thick.shape
    size = min(128, h, w)
    y0, x0 = (h - size) // 2, (w - size) // 2
    crop = thick[:24, y0 : y0 + size, x0 : x0 + size]
    ratio = min(spacing[0] / spacing[1], 8.0)
    side = np.ascontiguousarray(np.moveaxis(crop, 1, 0))  # an in-plane axis plays z
    n_side = int(math.floor(size / ratio + 1e-9))
    simulated = {p: features(degrade(side, ratio, p, n_thick=n_side), model) for p in PROFILES}
    return features(crop, model), simulated


def main() -> None:
    models = {"CT": load_model("mixed"), "MR": load_model("mr")}
    rows = []
    for name, path, axis, modality in SCANS:
        volume = read_volume(path, axis=axis)
        _, h, w = volume.shape
        y0, x0 = max(0, (h - 160) // 2), max(0, (w - 160) // 2)
        thin = volume.data[:, y0 : y0 + 160, x0 : x0 + 160].astype(np.float32)
        normalised = intensity_map(thin, modality).normalise(thin)
        for factor in (2.5, 4, 5):
            n_thick = min(int(np.floor(len(normalised) / factor + 1e-9)), 24)
            for truth in PROFILES:
                thick = degrade(normalised[: int(n_thick * factor)], factor, truth, n_thick=n_thick)
                spacing = (volume.spacing[0] * factor, *volume.spacing[1:])
                real, simulated = real_and_simulated(thick, spacing, models[modality])
                guess = min(PROFILES, key=lambda p: float(np.linalg.norm(real - simulated[p])))
                rows.append({"scan": name, "factor": factor, "truth": truth, "guess": guess,
                             "real": real.round(3).tolist(),
                             "simulated": {p: simulated[p].round(3).tolist() for p in PROFILES}})
                print(f"{name:9s} x{factor} {truth:8s} -> {guess}", flush=True)
    right = sum(r["guess"] == r["truth"] for r in rows)
    print("right", right, "of", len(rows))
    with open("docs/results/profile_cycle_residual.json", "w") as handle:
        json.dump({"right": right, "cases": len(rows), "rows": rows}, handle, indent=1)
        handle.write("\n")


if __name__ == "__main__":
    main()
