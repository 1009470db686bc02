"""Make the bundled sample: a chest CT crop of LIDC-IDRI-0002 (CC BY 3.0) at 1.25 mm, and its simulated
5 mm slab-average version; and a smaller crop for the regression test of the shipped model. Run from the repository root with ../shared/data present:

    python scripts/make_sample_data.py

LIDC-IDRI-0002 is the validation scan of the bundled model: it is never trained on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from napari_cycleinr.io import read_volume, write_volume
from napari_cycleinr.model.degrade import degrade
from napari_cycleinr.volume import resampled_z_affine

SOURCE = Path("../shared/data/train/ct_lidc0002_chest_1p25mm.nii.gz")
OUT = Path("src/napari_cycleinr/sample_data")
TEST_CROP = Path("tests/data/ct_lidc0002_crop_128x128x40_1p25mm.nii.gz")
FIRST_SLICE, THIN_SLICES, FACTOR = 80, 64, 4  # 80 mm of chest around the hila; 1.25 mm -> 5 mm
ROWS, COLS = slice(110, 334), slice(144, 368)  # 224 x 224 pixels (153 mm): heart, hila, both lungs


def crop(volume, first: int, count: int, rows: slice, cols: slice):
    """A sub-volume with its affine shifted so every voxel keeps its world position."""
    shift = np.eye(4)
    shift[:3, 3] = (first, rows.start, cols.start)
    header = {**volume.metadata["nifti_header"], "descrip": "LIDC-IDRI-0002 crop, CC BY 3.0"}
    return volume.replace(
        data=np.ascontiguousarray(volume.data[first : first + count, rows, cols]),
        affine=volume.affine @ shift,
        metadata={**volume.metadata, "source_path": str(SOURCE), "nifti_header": header},
    )


def main() -> int:
    volume = read_volume(SOURCE)
    thin = crop(volume, FIRST_SLICE, THIN_SLICES, ROWS, COLS)
    metadata = thin.metadata
    thick_data = degrade(thin.data.astype(np.float32), FACTOR, "average")
    thick = thin.replace(
        data=np.rint(thick_data).astype(np.int16),
        affine=resampled_z_affine(thin.affine, FACTOR),
        metadata={**metadata, "nifti_header": {**metadata["nifti_header"], "descrip": "LIDC-IDRI-0002 crop, 5 mm slab average, CC BY 3.0"}},
    )
    OUT.mkdir(parents=True, exist_ok=True)
    test_crop = crop(volume, 170, 40, slice(300, 428), slice(100, 228))  # liver dome, ribs and right lung base
    for path, vol in (
        (OUT / "chest_ct_1p25mm.nii.gz", thin),
        (OUT / "chest_ct_5mm.nii.gz", thick),
        (TEST_CROP, test_crop),
    ):
        path = write_volume(vol, path)
        print(f"{path}: {vol.shape} spacing {vol.spacing} {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
