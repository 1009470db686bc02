"""The training MR at coarser voxels, for configs/experiment_coarse_mr_average_mr.toml (measured, not taken).

    python scripts/make_coarse_mr.py [--data ../shared/data] [--out runs/data]

Mean of each 2 x 2 x 2 and 3 x 3 x 3 block of train/mr_sag_anon_mprage_0p9mm.nii.gz (1.7 and 2.6 mm voxels,
the noise averaged down as a coarser acquisition's would be), the affine scaled and shifted to the blocks'
centres, so the geometry stays the scan's own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

SOURCE = "train/mr_sag_anon_mprage_0p9mm.nii.gz"


def binned(image: nib.Nifti1Image, k: int) -> nib.Nifti1Image:
    data = np.asarray(image.dataobj, dtype=np.float32)
    a, b, c = (n // k * k for n in data.shape)
    blocks = data[:a, :b, :c].reshape(a // k, k, b // k, k, c // k, k).mean(axis=(1, 3, 5))
    affine = image.affine.copy()
    affine[:3, 3] += image.affine[:3, :3] @ np.full(3, (k - 1) / 2)
    affine[:3, :3] *= k
    out = nib.Nifti1Image(blocks, affine)
    out.set_qform(affine, 1)
    out.set_sform(affine, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="runs/data")
    args = parser.parse_args()
    image = nib.load(Path(args.data) / SOURCE)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for k in (2, 3):
        path = Path(args.out) / f"mr_sag_anon_mprage_bin{k}.nii.gz"
        nib.save(binned(image, k), path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
