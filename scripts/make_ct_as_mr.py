"""Body anatomy at MR contrasts for the MR weights' training (issue #21; configs/ct_as_mr*_*.toml).

    python scripts/make_ct_as_mr.py [--data ../shared/data] [--out runs/data]

The one training MR is a brain; MR users also scan the body. Two training CTs of the chest (the 4D-Lung phase
and the cardiac crop) with their Hounsfield units mapped through a piecewise-linear table to a T1-like contrast
(fat bright, fluid and lung dark, soft tissue between, cortical bone dark) and a T2-like one (fluid bright),
each CT in each contrast, times a smooth bias field as coils make, written as unsigned integers, the way
scanners store MR (so training reads them as MR and normalises them by their percentiles). The geometry stays
the scan's own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

SOURCES = {"4dlung": "train/ct_4dlung_phase00_chest_2p0mm.nii.gz",
           "aortacrop": "train/ct_totalseg_aortacrop_chest_1p5mm_resampled.nii.gz"}
WRITTEN = (("4dlung", "t1"), ("aortacrop", "t2"), ("4dlung", "t2"), ("aortacrop", "t1"))
"""In this order from one seed (each file's bias field the same on every run): the MR weights' stage
configs/ct_as_mr_*.toml trained with the first two, the next, configs/ct_as_mr_more_*.toml, with all four."""
CONTRASTS = {
    # (HU, signal) knots; air and lung dark in both
    "t1": [(-1024, 5), (-900, 5), (-500, 60), (-150, 700), (-80, 800), (-20, 350), (0, 150), (40, 450),
           (60, 500), (150, 560), (400, 300), (1000, 50), (3071, 40)],
    "t2": [(-1024, 5), (-900, 5), (-500, 40), (-150, 550), (-80, 600), (-20, 700), (0, 900), (20, 600),
           (40, 300), (60, 220), (150, 350), (400, 150), (1000, 30), (3071, 25)],
}


def file_name(name: str, contrast: str) -> str:
    return f"ct_{name}_as_{contrast}_mr.nii.gz"


def derived_names() -> dict[str, str]:
    """Each written file's name -> its source under the data folder and contrast, as weights' headers record it."""
    return {file_name(name, contrast): f"{SOURCES[name]} (as {contrast.upper()}-like MR: scripts/make_ct_as_mr.py)"
            for name, contrast in WRITTEN}


def bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field, about 0.8-1.2: coarse noise, upsampled and normalised."""
    coarse = rng.normal(size=(4, 4, 4))
    field = ndimage.zoom(coarse, [n / 4 for n in shape], order=3)[tuple(slice(0, n) for n in shape)]
    return 1.0 + 0.2 * field / max(float(np.abs(field).max()), 1e-6)


def as_mr(hu: np.ndarray, contrast: str, rng: np.random.Generator) -> np.ndarray:
    knots = np.array(CONTRASTS[contrast], dtype=np.float64)
    signal = np.interp(hu, knots[:, 0], knots[:, 1]) * bias_field(hu.shape, rng)
    return np.clip(np.rint(signal), 0, 65535).astype(np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="runs/data")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    for name, contrast in WRITTEN:
        image = nib.load(Path(args.data) / SOURCES[name])
        data = as_mr(np.asarray(image.dataobj, dtype=np.float32), contrast, rng)
        out = nib.Nifti1Image(data, image.affine)
        out.set_qform(image.affine, 1)
        out.set_sform(image.affine, 1)
        path = Path(args.out) / file_name(name, contrast)
        nib.save(out, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
