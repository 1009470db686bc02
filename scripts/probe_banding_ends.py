"""How much of a short scan's banding sits in its two end half-slabs (docs/results.md, "Lines at the slab period").

    python scripts/probe_banding_ends.py [--out docs/results/banding_ends.json]

Beyond the outermost acquired slice centres every method extrapolates and its output barely changes from slice
to slice, so those pairs, all of them inside a slab, pull the inside mean down. On a volume of a few slabs (the
20-slice MR in tests/data keeps 4-5 at x4-x5) they are a quarter of the pairs inside slabs. Banding of the whole
output against banding between the outermost acquired centres, slab average, tricubic and the bundled weights
an average profile gets, beside the thin reference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.evaluate import simulate_thick
from napari_cycleinr.model.infer import predict
from napari_cycleinr.model.metrics import banding
from napari_cycleinr.texture import body_level

TESTS = Path(__file__).resolve().parents[1] / "tests" / "data"
SCANS = {"tests/data TotalSegmentator MR": ("mr_totalseg_sm_117x91x20_3mm.nii.gz", "MR", "average_mr"),
         "tests/data TotalSegmentator CT": ("ct_totalseg_sm_122x101x30_3mm.nii.gz", "CT", "average")}


def between_outermost_centres(n_out: int, factor: int, n_thick: int) -> np.ndarray:
    """The neighbouring output pairs that lie between the first and last acquired slice centres."""
    centres = (np.arange(n_out) + 0.5) / factor - 0.5  # in acquired slices, 0 = the first centre
    return (centres[:-1] >= 0) & (centres[1:] <= n_thick - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results/banding_ends.json")
    args = parser.parse_args()
    rows = []
    for scan, (file, modality, weights) in SCANS.items():
        volume, model = read_volume(TESTS / file), load_model(weights)
        for factor in (4, 5):
            thick, reference, positions, intensities = simulate_thick(volume, factor, "average", modality)
            threshold = body_level(reference, modality)
            outputs = {"thin reference": reference,
                       "tricubic": intensities.denormalise(predict("tricubic", thick, positions, 1 / factor)),
                       "cycleinr": intensities.denormalise(predict("cycleinr", thick, positions, 1 / factor, model=model))}
            for method, output in outputs.items():
                between = between_outermost_centres(output.shape[0], factor, thick.shape[0])
                rows.append({"scan": scan, "factor": factor, "method": method,
                             "banding": round(banding(output, factor, modality, threshold), 3),
                             "between_outermost_centres": round(banding(output, factor, modality, threshold,
                                                                        pairs=between), 3)})
                print(rows[-1], flush=True)
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
