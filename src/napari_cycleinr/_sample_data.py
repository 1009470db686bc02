"""Sample data: a real chest CT crop shipped with the package, as acquired thick (5 mm) and thin (1.25 mm).

A 224 x 224 crop of LIDC-IDRI-0002 (The Cancer Imaging Archive, CC BY 3.0; Armato et al., Med. Phys. 38(2),
2011) over 80 mm of chest: 64 slices of 1.25 mm, and their 5 mm slab average (16 slices), made by
scripts/make_sample_data.py. Super-resolve the 5 mm volume to a spacing of 1.25 mm with the 1.25 mm volume as
reference, and the error layer shows what the model got wrong on a real scan.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from napari_cycleinr._reader import read_files

THICK = "chest_ct_5mm.nii.gz"
THIN = "chest_ct_1p25mm.nii.gz"


def sample_path(name: str) -> Path:
    """Where a bundled sample file is installed."""
    return Path(str(resources.files("napari_cycleinr") / "sample_data" / name))


def chest_ct_5mm() -> list[tuple[Any, dict[str, Any], str]]:
    """The thick-slice chest CT (16 slices of 5 mm): the input to super-resolve."""
    return read_files(sample_path(THICK))


def chest_ct_1p25mm() -> list[tuple[Any, dict[str, Any], str]]:
    """The same chest at 1.25 mm (64 slices): the reference for the error image."""
    return read_files(sample_path(THIN))
