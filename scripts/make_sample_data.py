"""Make the bundled sample: a chest CT crop of LIDC-IDRI-0002 (CC BY 3.0) at 1.25 mm, and its simulated
5 mm slab-average version. Run from the repository root with ../shared/data present:

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
FIRST_SLICE, THIN_SLICES, FACTOR = 80, 64, 4  # 80 mm of chest around the hila; 1.25 mm -> 5 mm
ROWS, COLS = slice(110, 334), slice(144, 368)  # 224 x 224 pixels (153 mm): heart, hila, both lungs


def main() -> int:
    volume = read_volume(SOURCE)
    start = FIRST_SLICE
    data = np.ascontiguousarray(volume.data[start : start + THIN_SLICES, ROWS, COLS])
    shift = np.eye(4)
    shift[:3, 3] = (start, ROWS.start, COLS.start)
    metadata = {**volume.metadata, "source_path": str(SOURCE), "nifti_header": {**volume.metadata["nifti_header"], "descrip": "LIDC-IDRI-0002 crop, CC BY 3.0"}}
    thin = volume.replace(data=data, affine=volume.affine @ shift, metadata=metadata)
    thick_data = degrade(data.astype(np.float32), FACTOR, "average")
    thick = thin.replace(
        data=np.rint(thick_data).astype(np.int16),
        affine=resampled_z_affine(thin.affine, FACTOR),
        metadata={**metadata, "nifti_header": {**metadata["nifti_header"], "descrip": "LIDC-IDRI-0002 crop, 5 mm slab average, CC BY 3.0"}},
    )
    OUT.mkdir(parents=True, exist_ok=True)
    for name, vol in (("chest_ct_1p25mm.nii.gz", thin), ("chest_ct_5mm.nii.gz", thick)):
        path = write_volume(vol, OUT / name)
        print(f"{path}: {vol.shape} spacing {vol.spacing} {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
